"""`evaluate` through CliRunner: every kind of model, LFW-style and `.bin` sets."""
from __future__ import annotations

from pathlib import Path

import pytest

from readers.folder import FolderDataset
from readers.synthetic import SyntheticDataset, write_pair_set
from tests.conftest import invoke, tiny_settings


def _check_set(record: dict) -> None:
    assert 0.0 <= record["accuracy_mean"] <= 1.0 and record["accuracy_std"] >= 0.0
    assert record["pairs"] == 40
    assert set(record["tar_at_far"]) == {"1e-3", "1e-4"}
    assert set(record["thresholds"]) == {"1e-3", "1e-4"}  # 20 impostor pairs: too few for either rate
    assert record["at_chance"] == (record["auc"] < 0.6)
    assert Path(record["roc_plot"]).exists()


@pytest.mark.parametrize("model", ["student", "teacher"])
def test_evaluate_student_and_teacher_on_txt_and_bin(trained: list[str], pair_sets: tuple[Path, Path],
                                                     model: str) -> None:
    txt, binf = pair_sets
    code, out, summary = invoke("evaluate", trained + [f"eval.pairs=[\"{txt}\", \"{binf}\"]", f"eval.model={model}"])
    assert code == 0, out
    assert set(summary["sets"]) == {"heldout", "heldout.bin"}
    for record in summary["sets"].values():
        _check_set(record)
    if model == "student":
        assert summary["compactness"]["rows"] > 0
    assert summary["parameters"] > 0 and summary["flops"] > 0
    run = Path(next(s.split("=", 1)[1] for s in trained if s.startswith("run.dir=")))
    log = (run / "evaluate.log").read_text()
    assert "FLOPs per image at 16 x 16" in log and "cosine thresholds" in log


def test_txt_and_bin_give_identical_results(trained: list[str], pair_sets: tuple[Path, Path], tmp_path: Path) -> None:
    txt, binf = pair_sets
    renamed = tmp_path / "other.bin"
    renamed.write_bytes(binf.read_bytes())
    code, out, summary = invoke("evaluate", trained + [f"eval.pairs=[\"{txt}\", \"{renamed}\"]", "eval.model=teacher"])
    assert code == 0, out
    a, b = summary["sets"]["heldout"], summary["sets"]["other"]
    assert a["accuracy_mean"] == pytest.approx(b["accuracy_mean"])
    assert a["auc"] == pytest.approx(b["auc"])


def test_evaluate_checkpoint_path_backbone_and_cache(trained: list[str], pair_sets: tuple[Path, Path],
                                                     teacher_weights: Path) -> None:
    txt, _ = pair_sets
    run = Path(next(s.split("=", 1)[1] for s in trained if s.startswith("run.dir=")))
    ckpt = sorted((run / "checkpoints").glob("*.pt"))[-1]
    for model in (str(ckpt), str(run / "backbone.pth")):
        code, out, summary = invoke("evaluate", trained + [f"eval.pairs=[\"{txt}\"]", f"eval.model={model}"])
        assert code == 0, out
        _check_set(summary["sets"]["heldout"])
    code, out, _ = invoke("evaluate", trained + [f"eval.pairs=[\"{txt}\"]", "eval.model=cache"])
    assert code == 2 and "not in cache" in out


def test_evaluate_cache_model_matches_teacher(tmp_path: Path, teacher_weights: Path) -> None:
    """With the pair images as the training folder, the cached teacher scores as the live teacher does.

    The cache stores each view's norm beside the unit view, so `eval.model=cache` fuses the same raw
    outputs as insightface's flip test: equal to float32 rounding.
    """
    held = SyntheticDataset(8, 4, 16, seed=777, difficulty=1.0)
    txt = Path(write_pair_set(held, tmp_path / "faces", 40, seed=0))
    settings = tiny_settings(tmp_path / "run", teacher_weights) + [
        "data.format=folder", f"data.root={txt.parent}", "cache.dtype=float32", f"eval.pairs=[\"{txt}\"]"]
    assert len(FolderDataset(txt.parent, 16)) == 32
    assert invoke("extract", settings)[0] == 0
    code, out, from_cache = invoke("evaluate", settings + ["eval.model=cache"])
    assert code == 0, out
    code, out, live = invoke("evaluate", settings + ["eval.model=teacher"])
    assert code == 0, out
    a, b = from_cache["sets"]["faces"], live["sets"]["faces"]
    for key in ("accuracy_mean", "accuracy_std", "auc"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key
    assert a["similarity"]["intra"]["mean"] == pytest.approx(b["similarity"]["intra"]["mean"], abs=1e-6)


def test_evaluate_real_onnx_model(pair_sets: tuple[Path, Path], shared_onnx: Path, tmp_path: Path) -> None:
    txt, _ = pair_sets
    s = 1 / 255
    code, out, summary = invoke("evaluate", tiny_settings(tmp_path) + [
        f"eval.pairs=[\"{txt}\"]", f"eval.model={shared_onnx}", "teacher.input_layout=NHWC",
        "teacher.mean=[0, 0, 0]", f"teacher.std=[{s}, {s}, {s}]", "teacher.input_size=112"])
    assert code == 0, out
    _check_set(summary["sets"]["heldout"])


def test_evaluate_usage_errors(tmp_path: Path, pair_sets: tuple[Path, Path]) -> None:
    code, out, _ = invoke("evaluate", tiny_settings(tmp_path))
    assert code == 2 and "eval.pairs" in out
    code, out, _ = invoke("evaluate", tiny_settings(tmp_path) + [f"eval.pairs=[\"{tmp_path / 'none.txt'}\"]",
                                                                  "eval.model=teacher"])
    assert code == 2
    code, out, _ = invoke("evaluate", tiny_settings(tmp_path) + [f"eval.pairs=[\"{pair_sets[0]}\"]",
                                                                  f"eval.model={tmp_path / 'nope.pt'}"])
    assert code == 2 and "eval.model" in out
    evil = tmp_path / "evil.bin"
    evil.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    code, out, _ = invoke("evaluate", tiny_settings(tmp_path) + [f"eval.pairs=[\"{evil}\"]", "eval.model=teacher"])
    assert code == 2 and not (tmp_path / "pwned").exists()


def test_a_bad_later_model_entry_is_refused_before_any_model_is_evaluated(tmp_path: Path, teacher_weights: Path,
                                                                          pair_sets: tuple[Path, Path]) -> None:
    base = tiny_settings(tmp_path / "run", teacher_weights) + [f"eval.pairs=[\"{pair_sets[0]}\"]"]
    code, out, _ = invoke("evaluate", base + [f"eval.model=[\"teacher\", \"{tmp_path / 'nope.pt'}\"]"])
    assert code == 2 and "nope.pt" in out
    assert not list((tmp_path / "run" / "eval").glob("teacher_*"))  # the teacher was not evaluated first
    code, out, _ = invoke("evaluate", base + ["eval.model=[\"teacher\", \"teacher\"]"])
    assert code == 2 and "both called 'teacher'" in out
    assert not list((tmp_path / "run" / "eval").glob("teacher_*"))


def test_evaluate_an_ijb_root_beside_a_pair_file(tmp_path: Path, teacher_weights: Path,
                                                 pair_sets: tuple[Path, Path]) -> None:
    """An `eval.pairs` entry that is a folder is an IJB root: aligned to 112, resized by the teacher to 16."""
    from tests.evaluation.test_ijb import write_ijb_root

    root = write_ijb_root(tmp_path / "IJBB", name="ijbb", identities=4, templates_per_identity=2).root
    settings = tiny_settings(tmp_path / "run", teacher_weights) + [f"eval.pairs=[\"{pair_sets[0]}\", \"{root}\"]"]
    code, out, summary = invoke("evaluate", settings + ["eval.model=teacher"])
    assert code == 0, out
    assert set(summary["sets"]) == {"heldout", "ijbb"}
    record = summary["sets"]["ijbb"]
    assert (record["templates"], record["template_pairs"]) == (8, 28)
    assert set(record["tar_at_far"]) == {"1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1"}
    assert all(v is not None for v in record["tar_at_far"].values())  # insightface's reading: every FAR
    bounded = record["tar_at_far_bounded"]
    assert bounded["1e-1"] is not None and bounded["1e-2"] is None  # 24 impostor pairs
    assert 0.0 <= record["auc"] <= 1.0 and Path(record["roc_plot"]).exists()
    assert sorted(p.name for p in (tmp_path / "run" / "eval" / "teacher_ijbb_work").glob("chunk_*.npy")) == [
        "chunk_000000.npy"]
    code, out, _ = invoke("evaluate", settings + ["eval.model=cache"])
    assert code == 2 and "IJB root" in out


def test_evaluate_identification_on_a_split_written_ijb_root(tmp_path: Path, teacher_weights: Path) -> None:
    """`split` writes the 1:N lists beside its IJB-layout set; `evaluate` reports 1:N from the same embedding."""
    code, out, split = invoke("split", tiny_settings(tmp_path / "split", teacher_weights) + [
        "data.synthetic.identities=10", "split.heldout_fraction=0.3", "split.seed=4"])
    assert code == 0, out
    code, out, summary = invoke("evaluate", tiny_settings(tmp_path / "run", teacher_weights) + [
        f"eval.pairs=[\"{split['ijb_root']}\"]", "eval.model=teacher"])
    assert code == 0, out
    record = summary["sets"]["ijbc"]
    assert (record["templates"], record["template_pairs"]) == (6, 15)  # the 1:1 record is still there
    identification = record["identification"]
    assert set(identification) == {"G1", "G2", "G1+G2"}
    counts = {g: tuple(identification[g][k] for k in ("gallery_templates", "probes", "mated", "non_mated"))
              for g in ("G1", "G2")}
    assert counts == {"G1": (2, 3, 2, 1), "G2": (1, 3, 1, 2)}  # 3 identities: 2 enrolled in G1, 1 in G2
    for gallery in ("G1", "G2", "G1+G2"):
        r = identification[gallery]
        assert 0.0 <= r["rank_1"] <= r["rank_5"] <= r["rank_10"] <= 1.0
        assert set(r["tpir_at_fpir"]) == {"1e-2", "1e-1"}
    assert identification["G1"]["tpir_at_fpir"] == {"1e-2": None, "1e-1": None}  # 1 non-mated probe: too few
    combined = identification["G1+G2"]
    assert (combined["gallery_templates"], combined["probes"], combined["rank_5"]) == (3, 3, 1.0)  # 3 to rank
    assert combined["tpir_at_fpir"]["1e-1"] is not None  # insightface's rule: ceil(3 x 0.1) = 1 of 6 comparisons
    assert "1:N gallery G1: rank-1" in out
    assert len(list((tmp_path / "run" / "eval" / "teacher_ijbc_work").glob("chunk_*.npy"))) == 1  # one pass


def test_pair_images_are_decoded_at_the_models_own_input_size(trained: list[str], pair_sets: tuple[Path, Path]) -> None:
    """The student was trained at 16 px: `data.image_size` (an unrelated data default) changes nothing."""
    txt, _ = pair_sets
    records = []
    for size in (16, 32, 112):
        code, out, summary = invoke("evaluate", trained + [f"eval.pairs=[\"{txt}\"]", "eval.model=student",
                                                           f"data.image_size={size}"])
        assert code == 0, out
        records.append({k: summary["sets"]["heldout"][k] for k in ("accuracy_mean", "accuracy_std", "auc")})
    assert records[0] == records[1] == records[2]


def test_several_models_are_compared_with_paired_bootstrap_intervals(trained: list[str],
                                                                     pair_sets: tuple[Path, Path]) -> None:
    txt, binf = pair_sets
    run_dir = Path(next(s for s in trained if s.startswith("run.dir=")).split("=", 1)[1])
    code, out, summary = invoke("evaluate", trained + [f"eval.pairs=[\"{txt}\", \"{binf}\"]",
                                                       "eval.model=[\"teacher\", \"student\"]", "eval.n_boot=50"])
    assert code == 0, out
    assert set(summary["models"]) == {"teacher", "student"} and "sets" not in summary
    assert set(summary["models"]["student"]["sets"]) == {"heldout", "heldout.bin"}
    comps = summary["comparisons"]
    assert {c["set"] for c in comps} == {"heldout"}  # the .bin names no identities
    assert {c["metric"] for c in comps} == {"auc", "tar@1e-3", "tar@1e-4", "tar@lowest_far"}
    auc = next(c for c in comps if c["metric"] == "auc")
    assert (auc["a"], auc["b"]) == ("teacher", "student")
    aucs = {m: summary["models"][m]["sets"]["heldout"]["auc"] for m in ("teacher", "student")}
    assert auc["difference"] == pytest.approx(aucs["student"] - aucs["teacher"])
    assert auc["ci_low"] <= auc["difference"] <= auc["ci_high"]
    assert (run_dir / "eval" / "comparison.md").exists() and (run_dir / "eval" / "comparison.json").exists()


def test_the_comparison_table_shows_size_thresholds_and_chance() -> None:
    from stages.evaluate.command import comparison_table

    record = {"accuracy_mean": 0.5, "accuracy_std": 0.01, "auc": 0.498, "at_chance": True,
              "tar_at_far": {"1e-3": 0.0015, "1e-4": None}, "thresholds": {"1e-3": 0.3125, "1e-4": None}}
    models = {"student": {"model": "student", "parameters": 1530000, "flops": 56000000, "sets": {"lfw": record}}}
    table = comparison_table(models, [])
    row = "| student | 1.53M | 56M | lfw | 0.5000 ± 0.0100 | 0.4980 (at chance) | 0.0015 (0.3125) | n/a (n/a) |"
    assert row in table
