"""Atomic file writes: write to a temporary name in the same folder, fsync, then rename.

A temporary (a file, or the folder of `atomic_folder`) is named `.{final name}.{pid}@{host}.{random}.tmp`
after the process that writes it. A write killed before its rename (`kill -9`, power loss) leaves its
temporary behind, up to the full size of the file (a teacher cache's finalisation copy);
`remove_stale_temporaries` deletes those whose writer no longer runs, and `atomic_path` and
`atomic_folder` call it before every write, so the next write into the folder cleans up. What is
removed, and what is never touched:

- `.{name}.{pid}@{host}.{random}.tmp` of any `name` in the folder, when `host` is this machine and
  no process `pid` runs (a live writer, this process included, keeps its file; a temporary of
  another machine writing to a shared folder is left alone, its writer cannot be checked from here);
- `.{final name}.{pid}.{random}.tmp` (no host) is taken as this machine's and treated the same way,
  but only for the final name being written;
- `.{final name}.{random}.tmp`, the names of versions before the PID was added (8 characters of
  `tempfile`'s alphabet): removed when not modified for `UNNAMED_STALE_AGE_S`, since a live writer
  keeps touching its file.
A PID reused by an unrelated process only delays the removal until that process ends. Processes on
one machine with separate PID namespaces (containers) sharing a folder must have distinct host names.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "localhost"
UNNAMED_STALE_AGE_S = 24 * 3600.0
_TAGGED = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[a-z0-9_]{8}\.tmp$")
_OWN_TAGGED = re.compile(r"^(?P<pid>\d+)(?:@(?P<host>[A-Za-z0-9-]+))?\.[^.]+\.tmp$")
_OWN_UNTAGGED = re.compile(r"^[a-z0-9_]{8}\.tmp$")


def _pid_runs(pid: int) -> bool:
    """Whether process `pid` may be running here (True whenever it cannot be told)."""
    if pid <= 0 or pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs under another user
        return True
    return True


def _is_stale(entry: os.DirEntry[str], own_prefix: str, now: float) -> bool:
    """Whether `entry` is a temporary of this module whose writer is gone (module docstring)."""
    name = entry.name
    if name.startswith(own_prefix):
        rest = name[len(own_prefix):]
        match = _OWN_TAGGED.match(rest)
        if match and match["host"] in (None, HOST):
            return not _pid_runs(int(match["pid"]))
        if _OWN_UNTAGGED.match(rest):
            return now - entry.stat(follow_symlinks=False).st_mtime > UNNAMED_STALE_AGE_S
    tagged = _TAGGED.match(name)
    return bool(tagged and tagged["host"] == HOST and not _pid_runs(int(tagged["pid"])))


def remove_stale_temporaries(final: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries in `final`'s folder left by writers that no longer run; returns them.

    Never fails the caller: a file that cannot be inspected or removed is logged and kept.
    """
    final = Path(final)
    removed: list[Path] = []
    own_prefix = f".{final.name}."
    now = time.time()
    try:
        entries = [e for e in os.scandir(final.parent) if e.name.startswith(".") and e.name.endswith(".tmp")]
    except OSError:
        return removed
    for entry in entries:
        try:
            folder = entry.is_dir(follow_symlinks=False)  # an `atomic_folder` temporary
            if not (folder or entry.is_file(follow_symlinks=False)) or not _is_stale(entry, own_prefix, now):
                continue
            if folder:
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("cannot remove stale temporary file %s: %s", entry.path, e)
            continue
        log.info("removed %s, a temporary file left by an interrupted write", entry.path)
        removed.append(Path(entry.path))
    return removed


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success it is renamed over `final`, on error removed.

    Temporaries of earlier writes into the same folder whose writer no longer runs are removed first.
    durable: fsync the file before the rename (survives a power loss, not only a killed process); a
    writer of many small files may skip it and sync once at the end (`align`).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    if final.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(final))
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}@{HOST}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the permissions open() would
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if durable:
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
        try:
            os.replace(tmp_path, final)
        except OSError as e:  # name the file being written, not its temporary
            raise type(e)(e.errno, e.strerror, str(final)) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes, durable: bool = True) -> None:
    """Write `data` to `final` atomically (`atomic_path`)."""
    with atomic_path(final, durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `final` atomically."""
    atomic_write_bytes(final, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` (the old one is removed),
    on error it is deleted, so a folder of outputs is never half written under its final name."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}@{HOST}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; give the folder the permissions mkdir would
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
