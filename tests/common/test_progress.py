"""`common.progress`: plain log lines instead of a redrawn bar when stderr is not a terminal."""
from __future__ import annotations

import logging

import pytest

from common.progress import PlainProgress, eta_text, progress


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plain_progress_logs_now_and_then_and_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    bar = PlainProgress(100, "extract", every_s=30.0, clock=clock)
    with caplog.at_level(logging.INFO):
        for _ in range(10):
            clock.t += 5.0
            bar.update(5)  # 50 images in 50 s: one line at 30 s
        bar.set_postfix_str("loss 1.0")
        bar.close()
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("extract: 30/100 (30%), 1.0 img/s, eta 0:01:10")
    assert lines[1] == "extract: 50/100 (50%), 1.0 img/s, eta 0:00:50, loss 1.0"


def test_progress_is_plain_off_a_terminal() -> None:
    assert isinstance(progress(10, "x"), PlainProgress)  # pytest captures stderr: not a terminal


def test_eta_text() -> None:
    assert eta_text(3725.4) == "1:02:05" and eta_text(-1) == "0:00:00"
