"""Shared fixtures: a tiny synthetic pipeline configuration and a random-weight teacher backbone."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `e2e` every test of a module that runs commands through the CLI (it imports `invoke`):
    `pytest -m "not e2e"` is the fast unit tier, `pytest -m e2e` the command-level one."""
    for item in items:
        if getattr(getattr(item, "module", None), "invoke", None) is invoke:
            item.add_marker(pytest.mark.e2e)


def invoke(command: str, settings: list[str], *extra: str) -> tuple[int, str, dict | None]:
    """Run `cli.py <command>` through click's CliRunner: (exit code, output, last-line JSON summary)."""
    from click.testing import CliRunner

    import cli

    args = [command, "--config", str(REPO / "pipeline.toml"), *extra]
    for s in settings:
        args += ["--set", s]
    result = CliRunner().invoke(cli.main, args, catch_exceptions=False)
    lines = [ln for ln in result.stdout.strip().splitlines() if ln.strip()]
    summary = json.loads(lines[-1]) if result.exit_code == 0 and lines else None
    return result.exit_code, result.output, summary


def tiny_settings(run_dir: Path, teacher_weights: Path | str = "") -> list[str]:
    """`--set` overrides for a seconds-long run: 8 identities x 6 images at 16x16, batches of 4 x 4."""
    return [
        f"run.dir={run_dir}", "run.seed=0", "run.device=cpu",
        "data.format=synthetic", "data.image_size=16", "data.workers=0",
        "data.synthetic.identities=8", "data.synthetic.images_per_identity=6",
        "teacher.arch=iresnet18", f"teacher.weights={teacher_weights}", "teacher.embedding_size=32",
        "teacher.batch_size=16",
        "student.arch=mobilefacenet", "student.embedding_size=16",
        "cache.positives_k=3", "cache.dtype=float32",
        "train.batch_size=16", "train.images_per_identity=4", "train.steps=6", "train.warmup_steps=0",
        "train.lr=0.05", "train.log_every=1", "train.checkpoint_every=2", "loss.scale=16.0",
        "loss.method=icd",  # the tests of the loop exercise ICD-Face; loss.method=auto has tests of its own
        "icd.max_age=100",
    ]


@pytest.fixture(scope="session")
def teacher_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An IResNet-18 (16x16 input, 32-d) with random weights saved as an insightface-style backbone.pth."""
    from models import create_backbone

    torch.manual_seed(0)
    model = create_backbone("iresnet18", 32, image_size=16)
    path = tmp_path_factory.mktemp("teacher") / "backbone.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def shared_onnx() -> Path:
    path = SHARED / "models" / "mobileface.onnx"
    if not path.exists():
        pytest.skip("../shared/models/mobileface.onnx is absent")
    return path
