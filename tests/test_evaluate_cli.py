"""`evaluate` through CliRunner: every kind of model, LFW-style and `.bin` sets; and `demo --quick`."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from tests.conftest import invoke, tiny_settings
from readers.folder import FolderDataset
from readers.synthetic import SyntheticDataset, write_pair_set


@pytest.fixture(scope="module")
def pair_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic LFW-style pair set (8 identities x 4 images, 40 pairs) and the same pairs as a `.bin`."""
    root = tmp_path_factory.mktemp("pairs")
    held = SyntheticDataset(8, 4, 16, seed=4242, difficulty=1.0)
    pairs_txt = Path(write_pair_set(held, root / "heldout", 40, seed=0))
    from evaluation.pairs import load_pair_set

    ps = load_pair_set(pairs_txt)
    bins = []
    for a, b in zip(ps.idx1, ps.idx2):
        bins += [ps.image_bytes(int(a)), ps.image_bytes(int(b))]
    bin_path = root / "heldout.bin"
    bin_path.write_bytes(pickle.dumps((bins, [bool(x) for x in ps.issame]), protocol=4))
    return pairs_txt, bin_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, teacher_weights: Path) -> list[str]:
    run = tmp_path_factory.mktemp("evalrun")
    settings = tiny_settings(run, teacher_weights)
    assert invoke("extract", settings)[0] == 0
    code, out, _ = invoke("distill", settings + ["train.steps=3"])
    assert code == 0, out
    return settings


def _check_set(record: dict) -> None:
    assert 0.0 <= record["accuracy_mean"] <= 1.0 and record["accuracy_std"] >= 0.0
    assert record["pairs"] == 40
    assert set(record["tar_at_far"]) == {"1e-3", "1e-4"}
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
    """With the pair images as the training folder, the cached teacher scores like the live teacher.

    The cache stores unit-norm views, so its flip fusion adds normalised views where insightface adds
    raw ones: the scores agree closely, not bit for bit.
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
    assert a["accuracy_mean"] == pytest.approx(b["accuracy_mean"])
    assert a["auc"] == pytest.approx(b["auc"], abs=0.01)


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


def test_demo_quick_writes_report(tmp_path: Path) -> None:
    code, out, summary = invoke("demo", [f"run.dir={tmp_path}", "run.device=cpu"], "--quick")
    assert code == 0, out
    report = Path(summary["report"])
    assert report.exists() and (tmp_path / "demo.json").exists()
    text = report.read_text()
    for name in ("teacher", "no_kd", "fcd", "fcd_icd"):
        assert name in text
    assert (tmp_path / "roc.png").exists() and (tmp_path / "heldout_similarity.png").exists()
    for name, model in summary["models"].items():
        ev = model["eval"]
        assert 0.0 <= ev["accuracy_mean"] <= 1.0, name
        assert ev["pairs"] == 40
        assert -1.0 <= ev["intra_mean"] <= 1.0 + 1e-6
        assert model["images_per_s"] > 0


def test_periodic_verification_during_training(pair_sets: tuple[Path, Path], tmp_path: Path,
                                               teacher_weights: Path) -> None:
    txt, _ = pair_sets
    code, out, _ = invoke("train", tiny_settings(tmp_path, teacher_weights)
                          + [f"eval.pairs=[\"{txt}\"]", "train.eval_every=2", "train.steps=4"])
    assert code == 0, out
    lines = (tmp_path / "verification.csv").read_text().splitlines()
    assert lines[0] == "step,heldout" and [ln.split(",")[0] for ln in lines[1:]] == ["2", "4"]
    assert all(0.0 <= float(ln.split(",")[1]) <= 1.0 for ln in lines[1:])
