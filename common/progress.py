"""Progress of a long loop, as a person reads it: a tqdm bar on a terminal, plain log lines otherwise.

A bar redrawn in place is right on a terminal and wrong in a log file (every redraw is kept); so when
stderr is not a terminal, `progress` logs a plain line at most every `PLAIN_EVERY_S` seconds (and at the
end) with the count, the rate and the time left.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Protocol

from tqdm import tqdm

log = logging.getLogger(__name__)

PLAIN_EVERY_S = 30.0


class Progress(Protocol):
    """What the loops call: `update(n)` after n more items, `set_postfix_str(text)`, `close()`; also a
    context manager that closes on exit."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> Any: ...

    def update(self, n: int = 1) -> Any: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> Any: ...

    def close(self) -> Any: ...


def eta_text(seconds: float) -> str:
    """H:MM:SS of a non-negative number of seconds."""
    s = int(max(0.0, seconds) + 0.5)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class PlainProgress:
    """Logs `desc: n/total (p%), r unit/s, eta H:MM:SS [postfix]` every `every_s` seconds and once at the end."""

    def __init__(self, total: int, desc: str, unit: str = "img", initial: int = 0,
                 every_s: float = PLAIN_EVERY_S, clock: Any = time.monotonic) -> None:
        self.total, self.desc, self.unit, self.n = int(total), desc, unit, int(initial)
        self.every_s, self.clock = every_s, clock
        self.start_n, self.start = self.n, clock()
        self.last = self.start
        self.postfix = ""
        self.closed = False

    def line(self) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = (self.n - self.start_n) / elapsed
        share = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        eta = eta_text((self.total - self.n) / rate) if rate > 0 and self.total else "?"
        return (f"{self.desc}: {self.n}/{self.total}{share}, {rate:.1f} {self.unit}/s, eta {eta}"
                + (f", {self.postfix}" if self.postfix else ""))

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            log.info("%s", self.line())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        if not self.closed and self.n > self.start_n:
            log.info("%s", self.line())
        self.closed = True

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def on_terminal() -> bool:
    """Whether stderr is a terminal (a bar is drawn there)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress(total: int, desc: str, unit: str = "img", initial: int = 0, leave: bool = True) -> Progress:
    """A tqdm bar when stderr is a terminal, else a `PlainProgress` that logs a line now and then."""
    if on_terminal():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, leave=leave)
    return PlainProgress(total, desc, unit, initial)
