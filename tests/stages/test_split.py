"""`split` end to end through click's CliRunner: the sets it writes load back with the project's readers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignment.warp import ARCFACE_TEMPLATE
from config.schema import DataConfig
from evaluation import load_pair_set
from evaluation.ijb.identification import read_search_lists
from evaluation.ijb.layout import read_ijb_layout
from readers import FaceDataset, SyntheticDataset, build_dataset, write_pair_set
from tests.conftest import SHARED, invoke, tiny_settings

# 10 identities x 6 images, 3 held out: 3 x C(6, 2) = 45 genuine pairs, C(18, 2) - 45 = 108 impostor pairs
SETTINGS = ["data.synthetic.identities=10", "split.heldout_fraction=0.3", "split.seed=4"]


def _split(run: Path, *extra: str) -> dict:
    code, out, summary = invoke("split", tiny_settings(run) + SETTINGS + list(extra))
    assert code == 0, out
    assert summary is not None
    return summary


@pytest.fixture(scope="module")
def split_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _split(tmp_path_factory.mktemp("split") / "run")


def _list(path: str, size: int = 16) -> FaceDataset:
    return build_dataset(DataConfig(format="list", root=path, image_size=size))


def test_summary_counts(split_run: dict) -> None:
    assert split_run["train_identities"] == 7 and split_run["heldout_identities"] == 3
    assert split_run["genuine_pairs"] == 45 and split_run["impostor_pairs"] == 108  # all of them (under the auto count)
    assert split_run["templates"] == 6 and split_run["template_pairs"] == 15  # 2 per identity; C(6, 2)
    assert Path(split_run["out_dir"], "config.toml").is_file()
    assert not [p for p in Path(split_run["out_dir"]).parent.iterdir() if p.name.startswith(".")]


def test_train_and_heldout_lists_load_back_disjoint(split_run: dict) -> None:
    source = SyntheticDataset(10, 6, 16, seed=1234, difficulty=1.0)
    train, held = _list(split_run["train_list"]), _list(split_run["heldout_list"])
    assert len(train) == 42 and len(held) == 18
    train_ids = {Path(k).parent.name for k in train.keys}
    held_ids = {Path(k).parent.name for k in held.keys}
    assert len(train_ids) == 7 and len(held_ids) == 3 and not train_ids & held_ids
    assert train.num_classes == 7
    for k in (0, 17, 41):  # the image under each line is the source row it names, pixel for pixel
        name, number = Path(train.keys[k]).stem.rsplit("_", 1)
        row = int(name.removeprefix("id_")) * 6 + int(number) - 1
        assert np.array_equal(train.load(k), source.load(row))
    labels_by_identity: dict[str, set[int]] = {}
    for key, label in zip(train.keys, train.labels.tolist(), strict=True):
        labels_by_identity.setdefault(Path(key).parent.name, set()).add(label)
    assert all(len(v) == 1 for v in labels_by_identity.values())


def test_pair_set_loads_with_all_genuine_pairs(split_run: dict) -> None:
    pairs = load_pair_set(split_run["pairs"])
    assert len(pairs) == 45 + 108 and int(pairs.issame.sum()) == 45
    assert pairs.labels is not None
    same = pairs.labels[pairs.idx1] == pairs.labels[pairs.idx2]
    assert np.array_equal(same, pairs.issame)
    found = {tuple(sorted((int(a), int(b)))) for a, b in zip(pairs.idx1, pairs.idx2, strict=True)}
    assert len(found) == len(pairs)  # no pair twice
    held_ids = {Path(k).parent.name for k in _list(split_run["heldout_list"]).keys}
    assert {Path(p).parent.name for p in pairs.images if isinstance(p, Path)} == held_ids
    for fold in np.array_split(pairs.issame, 10):
        assert 0 < fold.sum() < len(fold)


def test_ijb_root_reads_back(split_run: dict) -> None:
    layout = read_ijb_layout(split_run["ijb_root"])
    assert layout.name == "ijbc" and len(layout.images) == 18
    assert np.allclose(layout.landmarks, ARCFACE_TEMPLATE[None], atol=1e-4)
    assert (layout.detector_scores == 1.0).all()
    assert len(np.unique(layout.templates)) == 6 and len(np.unique(layout.medias)) == 18
    with Image.open(layout.image_path(0)) as im:
        assert im.size == (112, 112)
    identity = {t: {layout.images[i].rsplit("_", 1)[0] for i in layout.image_index[layout.templates == t]}
                for t in np.unique(layout.templates).tolist()}
    assert all(len(v) == 1 for v in identity.values())
    same = np.array([identity[a] == identity[b] for a, b in zip(layout.pair_t1, layout.pair_t2, strict=True)])
    assert np.array_equal(same, layout.pair_labels) and int(same.sum()) == 3


def test_ijb_root_has_1n_lists_of_gallery_and_probe_templates(split_run: dict) -> None:
    """Each held-out identity enrolled once, in G1 or G2, by one of its templates; its other templates are
    probes; the probes of one gallery's identities are the other gallery's non-mated probes."""
    layout = read_ijb_layout(split_run["ijb_root"])
    lists = read_search_lists(layout)
    assert lists is not None and list(lists.galleries) == ["G1", "G2"]
    identity = {t: int(layout.images[layout.image_index[np.flatnonzero(layout.templates == t)[0]]][3:8])
                for t in np.unique(layout.templates).tolist()}
    for one in [*lists.galleries.values(), lists.probes]:
        assert [identity[t] for t in one.templates.tolist()] == one.subjects.tolist()  # SUBJECT_ID = the label
        rows = Path(one.path).read_text().splitlines()
        assert rows[0] == "TEMPLATE_ID,SUBJECT_ID,FILENAME"
        listed = sorted((int(r.split(",")[0]), r.split(",")[2]) for r in rows[1:])
        assert listed == sorted((int(layout.templates[k]), layout.images[i]) for k, i in enumerate(layout.image_index)
                                if layout.templates[k] in set(one.templates.tolist()))  # one row per image
    g1, g2 = (set(g.subjects.tolist()) for g in lists.galleries.values())
    assert (len(g1), len(g2)) == (2, 1) and not g1 & g2 and g1 | g2 == set(identity.values())
    assert len(lists.galleries["G1"].templates) + len(lists.galleries["G2"].templates) == 3  # one per identity
    gallery_templates = set(np.r_[lists.galleries["G1"].templates, lists.galleries["G2"].templates].tolist())
    assert set(lists.probes.templates.tolist()) == set(identity) - gallery_templates
    probe_subjects = set(lists.probes.subjects.tolist())
    assert probe_subjects - g1 and probe_subjects - g2  # non-mated probes for each gallery
    assert split_run["identification_templates"] == {"G1": 2, "G2": 1, "probes": 3}


def test_no_1n_lists_without_a_second_template(tmp_path: Path) -> None:
    summary = _split(tmp_path / "run", "split.template_size=4")  # 6 images: one template per identity
    assert summary["templates"] == 3 and summary["identification_templates"] == {"G1": 0, "G2": 0, "probes": 0}
    assert read_search_lists(read_ijb_layout(summary["ijb_root"])) is None
    assert not list(Path(summary["ijb_root"], "meta").glob("*.csv"))


def test_same_seed_same_sets_other_seed_other_split(split_run: dict, tmp_path: Path) -> None:
    again = _split(tmp_path / "again")
    assert Path(again["pairs"]).read_text() == Path(split_run["pairs"]).read_text()
    other = _split(tmp_path / "other", "split.seed=5")
    ids = [{Path(k).parent.name for k in _list(s["heldout_list"]).keys} for s in (split_run, other)]
    assert ids[0] != ids[1]


def test_an_earlier_split_of_other_settings_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    first = _split(tmp_path / "run")
    lists = Path(first["train_list"]).read_text()
    assert _split(tmp_path / "run")["train_list"] == first["train_list"]  # the same settings: written again
    code, out, _ = invoke("split", tiny_settings(tmp_path / "run") + SETTINGS + ["split.seed=5"])
    assert code == 2 and "--overwrite" in out and "other settings" in out and "Traceback" not in out
    assert Path(first["train_list"]).read_text() == lists
    code, out, _ = invoke("split", tiny_settings(tmp_path / "run") + SETTINGS + ["split.seed=5"], "--overwrite")
    assert code == 0, out
    assert Path(first["train_list"]).read_text() != lists


def test_folder_source_lists_the_original_files(tmp_path: Path) -> None:
    faces = Path(write_pair_set(SyntheticDataset(6, 3, 16, seed=5, difficulty=1.0), tmp_path / "faces", 20, 0)).parent
    (faces / "pairs.txt").unlink()
    summary = _split(tmp_path / "run", "data.format=folder", f"data.root={faces}", "split.heldout_fraction=0.5")
    train = _list(summary["train_list"])
    assert all(Path(k).is_absolute() and Path(k).is_relative_to(faces) for k in train.keys)
    assert not (Path(summary["out_dir"]) / "images").exists()
    assert summary["heldout_identities"] == 3 and summary["genuine_pairs"] == 9
    assert len(load_pair_set(summary["pairs"])) == 9 + summary["impostor_pairs"]


def test_too_few_heldout_identities_is_a_config_error(tmp_path: Path) -> None:
    code, out, _ = invoke("split", tiny_settings(tmp_path / "run") + ["split.heldout_fraction=0.05"])
    assert code == 2 and "split.heldout_fraction" in out
    assert not (tmp_path / "run" / "split").exists()


def test_explicit_impostor_counts(tmp_path: Path) -> None:
    summary = _split(tmp_path / "run", "split.impostor_pairs=20", "split.impostor_template_pairs=5")
    assert summary["impostor_pairs"] == 20 and summary["template_pairs"] == 3 + 5
    assert len(load_pair_set(summary["pairs"])) == 45 + 20


@pytest.mark.skipif(not (SHARED / "data" / "lfw_devtrain" / "train.rec").is_file(),
                    reason="../shared/data/lfw_devtrain is absent")
def test_real_faces_from_a_rec(tmp_path: Path) -> None:
    """LFW DevTrain (a `.rec`, written out at 32x32 to keep it near 13 s): every output reads back."""
    root = SHARED / "data" / "lfw_devtrain"
    code, out, summary = invoke("split", [f"run.dir={tmp_path / 'run'}", "data.format=rec", f"data.root={root}",
                                          "data.image_size=32", "split.heldout_fraction=0.02"])
    assert code == 0, out
    assert summary is not None
    train, held = _list(summary["train_list"], 32), _list(summary["heldout_list"], 32)
    assert len(train) + len(held) == 9525
    assert not {Path(k).parent.name for k in train.keys} & {Path(k).parent.name for k in held.keys}
    assert int(load_pair_set(summary["pairs"]).issame.sum()) == summary["genuine_pairs"]
    assert len(read_ijb_layout(summary["ijb_root"]).images) == len(held)
