"""IJB 1:N identification (`evaluation.ijb.identification`) against brute-force loops over probes written here.

The loops sort every probe's gallery by score and walk the list; they share no code with the module. The
end-to-end test writes the 1:N lists, in the release's CSV format, beside a small IJB-layout release from
`tests.evaluation.test_ijb.write_ijb_root`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from evaluation.ijb import evaluate_ijb, read_ijb_layout
from evaluation.ijb.identification import (
    cmc,
    identification_record,
    insightface_tpir,
    open_set_tpir,
    read_search_lists,
    search_gallery,
)
from tests.evaluation.test_ijb import (
    WrittenIjb,
    _aligned_views,
    loop_image_feature,
    loop_template_features,
    pixel_embedder,
    write_ijb_root,
)

FPIR_KEYS = ["1e-2", "1e-1"]


# ---- reference loops --------------------------------------------------------------------------------------

@dataclass
class LoopSearch:
    """One probe's search by the loop: its gallery ordered best first, ties with a non-mate put the mate last."""

    rank: int | None  # 1-based position of the first mate, None without one
    mated_score: float | None
    top_non_mated: float | None
    non_mated: list[float]


def loop_search(probe: np.ndarray, subject: int, gallery: np.ndarray, gallery_subjects: list[int]) -> LoopSearch:
    scored = [(float(np.dot(probe.astype(np.float64), g.astype(np.float64))), s == subject)
              for g, s in zip(gallery, gallery_subjects, strict=True)]
    ordered = sorted(scored, key=lambda x: (-x[0], x[1]))
    rank = next((i + 1 for i, (_, mate) in enumerate(ordered) if mate), None)
    non_mated = [v for v, mate in scored if not mate]
    mated = [v for v, mate in scored if mate]
    return LoopSearch(rank, max(mated) if mated else None, max(non_mated) if non_mated else None, non_mated)


def loop_cmc(searches: list[LoopSearch], k: int) -> float:
    mated = [s for s in searches if s.rank is not None]
    return sum(1 for s in mated if s.rank is not None and s.rank <= k) / len(mated)


def loop_open_set_tpir(searches: list[LoopSearch], fpir: float) -> float | None:
    """The lowest threshold t among the non-mated top scores at which the fraction of non-mated searches
    scoring above t is at most fpir; TPIR = mated searches with the mate at rank 1 and above t."""
    mated = [s for s in searches if s.rank is not None]
    tops = [s.top_non_mated for s in searches if s.rank is None and s.top_non_mated is not None]
    if math.floor(fpir * len(tops) + 1e-9) < 1 or not mated:
        return None
    allowed = [t for t in sorted(set(tops)) if sum(1 for x in tops if x > t) / len(tops) <= fpir]
    threshold = allowed[0]
    return sum(1 for s in mated if s.rank == 1 and s.mated_score is not None and s.mated_score > threshold) / len(mated)


def loop_insightface_tpir(searches: list[LoopSearch], fpir: float) -> float | None:
    """insightface's IJB_1N.py rule: every non-mated comparison of every probe in one list, sorted; the
    threshold is the ceil(Q x fpir)-th of them; TPIR = probes whose mated score is above it."""
    negatives = sorted((v for s in searches for v in s.non_mated), reverse=True)
    position = math.ceil(len(searches) * fpir - 1e-9)
    if position > len(negatives):
        return None
    threshold = negatives[position - 1]
    return sum(1 for s in searches if s.mated_score is not None and s.mated_score > threshold) / len(searches)


def loop_open_set_record(probes: np.ndarray, probe_subjects: list[int], gallery: np.ndarray,
                         gallery_subjects: list[int]) -> tuple[dict, list[LoopSearch]]:
    searches = [loop_search(p, s, gallery, gallery_subjects) for p, s in zip(probes, probe_subjects, strict=True)]
    mated = sum(1 for s in searches if s.rank is not None)
    record = {"gallery_templates": len(gallery), "probes": len(probes), "mated": mated,
              "non_mated": len(probes) - mated, **{f"rank_{k}": loop_cmc(searches, k) for k in (1, 5, 10)},
              "tpir_at_fpir": {key: loop_open_set_tpir(searches, f) for key, f in zip(FPIR_KEYS, (1e-2, 1e-1),
                                                                                         strict=True)}}
    return record, searches


def _assert_record(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        if key == "tpir_at_fpir":
            assert list(actual[key]) == FPIR_KEYS
            for fk, v in value.items():
                assert actual[key][fk] == (None if v is None else pytest.approx(v, abs=1e-12)), fk
        else:
            assert actual[key] == pytest.approx(value, abs=1e-12), key


# ---- the equations on random searches ---------------------------------------------------------------------

def _random_search(rng: np.random.Generator, integer: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """60 subjects with a centre each; gallery: one template of each of the first 40 (some a second one);
    probes: 400 noisy templates of any of the 60 (those of the last 20 are never mated)."""
    dim = 8 if integer else 16
    centres = rng.normal(size=(60, dim))
    gallery_subjects = np.r_[np.arange(40), [3, 17]]
    probe_subjects = rng.integers(0, 60, 400)

    def noisy(subjects: np.ndarray, noise: float) -> np.ndarray:
        x = centres[subjects] + rng.normal(0, noise, (len(subjects), dim))
        if integer:  # small integers: exact float32 products and many ties
            return np.clip(np.round(x), -2, 2).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return noisy(probe_subjects, 1.0), probe_subjects, noisy(gallery_subjects, 0.3), gallery_subjects


@pytest.mark.parametrize("integer", [False, True])
def test_cmc_and_tpir_match_the_loop(integer: bool) -> None:
    rng = np.random.default_rng(5)
    probes, probe_subjects, gallery, gallery_subjects = _random_search(rng, integer)
    expected, searches = loop_open_set_record(probes, probe_subjects.tolist(), gallery, gallery_subjects.tolist())
    for chunk in (1, 7, 4096):
        outcome = search_gallery(probes, probe_subjects, gallery, gallery_subjects, keep=60, chunk=chunk)
        mated = outcome.rank > 0
        assert outcome.rank[mated].tolist() == [s.rank for s in searches if s.rank is not None]
        actual = {"gallery_templates": len(gallery), "probes": len(probes), "mated": int(mated.sum()),
                  "non_mated": int((~mated).sum()), **cmc(outcome.rank[mated]),
                  "tpir_at_fpir": open_set_tpir(outcome.best_mated[mated], outcome.rank[mated],
                                                outcome.top_non_mated[~mated])}
        _assert_record(actual, expected)
    assert 0.2 < expected["rank_1"] < expected["rank_5"] < expected["rank_10"] < 1.0  # a search worth testing
    assert expected["non_mated"] >= 100 and None not in expected["tpir_at_fpir"].values()
    if integer:  # ties between a mate and a non-mate were met, and counted against the probe
        assert any(s.mated_score in s.non_mated for s in searches if s.mated_score is not None)


@pytest.mark.parametrize("integer", [False, True])
def test_insightface_reading_matches_the_loop(integer: bool) -> None:
    rng = np.random.default_rng(9)
    probes, probe_subjects, gallery, gallery_subjects = _random_search(rng, integer)
    enrolled = probe_subjects < 40  # insightface's closed set: every probe mated
    probes, probe_subjects = probes[enrolled], probe_subjects[enrolled]
    searches = [loop_search(p, s, gallery, gallery_subjects.tolist())
                for p, s in zip(probes, probe_subjects.tolist(), strict=True)]
    outcome = search_gallery(probes, probe_subjects, gallery, gallery_subjects,
                             keep=math.ceil(0.1 * len(probes)), chunk=13)
    assert cmc(outcome.rank) == {f"rank_{k}": pytest.approx(loop_cmc(searches, k)) for k in (1, 5, 10)}
    tpir = insightface_tpir(outcome.best_mated, outcome.non_mated_largest, outcome.non_mated_count)
    assert list(tpir) == FPIR_KEYS
    for key, fpir in zip(FPIR_KEYS, (1e-2, 1e-1), strict=True):
        assert tpir[key] == pytest.approx(loop_insightface_tpir(searches, fpir), abs=1e-12), key
    assert outcome.non_mated_count == sum(len(s.non_mated) for s in searches)


def test_too_few_searches_give_none() -> None:
    assert open_set_tpir(np.array([0.9, 0.8]), np.array([1, 2]), np.full(99, 0.1)) == {"1e-2": None, "1e-1": 0.5}
    assert open_set_tpir(np.empty(0), np.empty(0, np.int64), np.full(500, 0.1))["1e-1"] is None
    assert cmc(np.empty(0, np.int64)) == {"rank_1": None, "rank_5": None, "rank_10": None}
    assert insightface_tpir(np.array([0.5] * 40), np.array([0.7, 0.6, 0.4]), 3) == {"1e-2": 0.0, "1e-1": None}
    assert insightface_tpir(np.array([0.65] * 20), np.array([0.7, 0.6]), 2) == {"1e-2": 0.0, "1e-1": 1.0}  # 2nd of 2


# ---- the lists and the whole protocol ---------------------------------------------------------------------

GALLERIES = ("G1", "G2")


def write_search_lists(written: WrittenIjb, root: Path, name: str = "ijbc",
                       galleries: tuple[str, str] = GALLERIES) -> dict[str, list[int]]:
    """The release's 1:N CSVs for `written`: identities dealt alternately to the two galleries, each enrolled
    by its first template, its other templates probes; one row per `tid_mid` line, subject = 500 + identity."""
    by_identity: dict[int, list[int]] = {}
    for template, ident in sorted(written.identity_of_template.items()):
        by_identity.setdefault(ident, []).append(template)
    lists: dict[str, list[int]] = {galleries[0]: [], galleries[1]: [], "probe": []}
    for ident, templates in by_identity.items():
        lists[galleries[ident % 2]].append(templates[0])
        lists["probe"].extend(templates[1:])
    for key, templates in lists.items():
        file = f"{name}_1N_probe_mixed.csv" if key == "probe" else f"{name}_1N_gallery_{key}.csv"
        rows = ["TEMPLATE_ID,SUBJECT_ID,FILENAME,FACE_X"] + [
            f"{t},{500 + written.identity_of_template[t]},{image},0" for image, t, _ in written.lines if t in templates]
        (root / "meta" / file).write_text("\n".join(rows) + "\n")
    return lists


@pytest.fixture(scope="module")
def searchable(tmp_path_factory: pytest.TempPathFactory) -> tuple[WrittenIjb, dict[str, list[int]]]:
    written = write_ijb_root(tmp_path_factory.mktemp("IJBC1N"), identities=12, templates_per_identity=3, seed=3)
    return written, write_search_lists(written, written.root)


def test_evaluate_ijb_identification_matches_the_loop(searchable: tuple[WrittenIjb, dict[str, list[int]]],
                                                      tmp_path: Path) -> None:
    written, lists = searchable
    result = evaluate_ijb(written.root, pixel_embedder(), tmp_path / "work", {"model": "pixels"}, chunk_size=16,
                          batch_size=8, probe_chunk=5)
    record = result.record["identification"]
    assert list(record) == ["G1", "G2", "G1+G2"]
    names = read_ijb_layout(written.root).images
    views = _aligned_views(written, names)
    index = {n: i for i, n in enumerate(names)}
    feats = np.stack([loop_image_feature(views[index[n], 0], views[index[n], 1], written.scores[n], True, True, True)
                      for n, _, _ in written.lines])
    tfeats = loop_template_features(feats, [t for _, t, _ in written.lines], [m for _, _, m in written.lines])

    def side(templates: list[int]) -> tuple[np.ndarray, list[int]]:
        return np.stack([tfeats[t] for t in templates]), [written.identity_of_template[t] for t in templates]

    probes, probe_subjects = side(lists["probe"])
    for gallery_name in GALLERIES:
        gallery, gallery_subjects = side(lists[gallery_name])
        expected, _ = loop_open_set_record(probes, probe_subjects, gallery, gallery_subjects)
        _assert_record(record[gallery_name], expected)
        assert (expected["gallery_templates"], expected["probes"], expected["mated"]) == (6, 24, 12)
        assert expected["tpir_at_fpir"]["1e-2"] is None and expected["tpir_at_fpir"]["1e-1"] is not None
    gallery, gallery_subjects = side(lists["G1"] + lists["G2"])
    searches = [loop_search(p, s, gallery, gallery_subjects) for p, s in zip(probes, probe_subjects, strict=True)]
    combined = record["G1+G2"]
    assert (combined["gallery_templates"], combined["probes"]) == (12, 24)
    for k in (1, 5, 10):
        assert combined[f"rank_{k}"] == pytest.approx(loop_cmc(searches, k)), k
    for key, fpir in zip(FPIR_KEYS, (1e-2, 1e-1), strict=True):
        assert combined["tpir_at_fpir"][key] == pytest.approx(loop_insightface_tpir(searches, fpir)), key
    assert combined["rank_10"] > combined["rank_1"] > 0.1  # the pixel embedder tells some identities apart


def test_ijbb_names_its_galleries_s1_s2(tmp_path: Path) -> None:
    written = write_ijb_root(tmp_path / "IJBB", name="ijbb", identities=4, templates_per_identity=2, seed=1)
    write_search_lists(written, written.root, "ijbb", ("S1", "S2"))
    lists = read_search_lists(read_ijb_layout(written.root))
    assert lists is not None and list(lists.galleries) == ["S1", "S2"]
    ids = np.array(sorted(written.identity_of_template))
    record = identification_record(lists, ids, np.eye(len(ids), 16, dtype=np.float32))
    assert list(record) == ["S1", "S2", "S1+S2"]


def test_without_the_lists_nothing_changes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    written = write_ijb_root(tmp_path / "plain", identities=3, templates_per_identity=2, seed=2)
    with caplog.at_level(logging.INFO, logger="evaluation.ijb.verify"):
        result = evaluate_ijb(written.root, pixel_embedder(), tmp_path / "work", {"model": "pixels"})
    assert "identification" not in result.record
    assert sum("1:N identification skipped" in r.getMessage() for r in caplog.records) == 1


def _copy_release(written: WrittenIjb, dest: Path) -> Path:
    (dest / "loose_crop").mkdir(parents=True)
    (dest / "meta").mkdir()
    for p in (written.root / "meta").iterdir():
        (dest / "meta" / p.name).write_bytes(p.read_bytes())
    return dest


@pytest.mark.parametrize("file, content, message", [
    ("ijbc_1N_gallery_G1.csv", "100,500,1.png\n", "line 1: expected the header row"),
    ("ijbc_1N_gallery_G1.csv", "SUBJECT_ID,TEMPLATE_ID,FILENAME\n100,500,1.png\n", "line 1: the header must start"),
    ("ijbc_1N_gallery_G1.csv", "TEMPLATE_ID,SUBJECT_ID\n100,500\n\n100\n", "line 4: expected 'TEMPLATE_ID,SUBJECT_ID"),
    ("ijbc_1N_gallery_G1.csv", "TEMPLATE_ID,SUBJECT_ID\n100,500\n107,x\n", "line 3: SUBJECT_ID must be an integer"),
    ("ijbc_1N_probe_mixed.csv", "TEMPLATE_ID,SUBJECT_ID\n107,500\n107,501\n", "line 3: template 107 has subject 501"),
    ("ijbc_1N_probe_mixed.csv", "TEMPLATE_ID,SUBJECT_ID\n107,500\n99999,500\n", "line 3: template 99999 is not in"),
    ("ijbc_1N_probe_mixed.csv", "TEMPLATE_ID,SUBJECT_ID\n", "no templates listed"),
    ("ijbc_1N_probe_mixed.csv", "TEMPLATE_ID,SUBJECT_ID\n107,500\n100,500\n", "line 3: template 100 is also listed"),
])
def test_malformed_lists_are_named(searchable: tuple[WrittenIjb, dict[str, list[int]]], tmp_path: Path, file: str,
                                   content: str, message: str) -> None:
    root = _copy_release(searchable[0], tmp_path / "root")
    (root / "meta" / file).write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        read_search_lists(read_ijb_layout(root))
    assert file in str(info.value)


def test_a_missing_list_is_named(searchable: tuple[WrittenIjb, dict[str, list[int]]], tmp_path: Path) -> None:
    root = _copy_release(searchable[0], tmp_path / "root")
    (root / "meta" / "ijbc_1N_gallery_G2.csv").unlink()
    with pytest.raises(ConfigError, match="ijbc_1N_gallery_G2.csv"):
        read_search_lists(read_ijb_layout(root))
