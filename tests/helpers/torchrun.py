"""Launch `cli.py` under `torchrun --standalone` from a test (gloo on this CPU), and read its JSON summaries."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def torchrun(command: str, settings: list[str], *extra: str, procs: int = 2) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc_per_node procs cli.py <command> --set ...`, one thread a process."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
            str(REPO / "cli.py"), command, "--config", str(REPO / "pipeline.toml"), *extra]
    for s in settings:
        args += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)


def summaries(stdout: str) -> list[dict]:
    """The JSON summary lines of a launch's stdout (rank 0 alone prints one)."""
    return [json.loads(ln) for ln in stdout.splitlines() if ln.startswith("{")]
