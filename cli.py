"""Command line: `icdface COMMAND [--config F] [--set k=v ...]` (`icdface --help` lists the commands).

`icdface` is what `pip install` puts on the PATH; `python cli.py` from the checkout is the same command.

Logs and progress go to stderr; the last line on stdout is one JSON object summing up the run, and the
same object is written into the run directory. Exit status 0 on success, 2 for usage and config errors,
1 for failures while running.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from common.atomic import atomic_write_text
from common.distributed import env_rank, env_world
from common.errors import ConfigError, PipelineError
from common.version import VERSION
from config import PipelineConfig, load_config

log = logging.getLogger("icdface")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at each record (so it follows click's test runner), through
    `tqdm.write`, which keeps a progress bar on a terminal below the log lines."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        self.stream = sys.stderr
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
# commands that make no run (their outputs are the files they are given): no <run.dir>/<command>.json or .log
RUNLESS_COMMANDS = ("convert",)


@contextlib.contextmanager
def command_log(run_dir: str | Path, command: str) -> Any:
    """While the command runs, its log also goes to `<run.dir>/<command>.log` (appended: a resumed run's
    lines follow the first run's), as arcface_torch writes `training.log`; rank 0 only under torchrun."""
    if env_rank() != 0 or command in RUNLESS_COMMANDS:
        yield
        return
    path = Path(run_dir) / f"{command}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    except (ConfigError, PipelineError, OSError) as e:  # the file ends with why the command stopped
        handler.emit(logging.LogRecord("icdface", logging.ERROR, __file__, 0, "%s", (e,), None))
        raise
    finally:
        root.removeHandler(handler)
        handler.close()


def _setup_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(logging.INFO if env_rank() == 0 else logging.WARNING)
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs at INFO on every import


DISTRIBUTED_COMMANDS = ("extract", "train", "distill")  # the commands `torchrun` may start
DEFAULT_CONFIG = "pipeline.toml"


def emit_summary(summary: dict[str, Any], run_dir: str | Path, command: str) -> None:
    """Write the run's JSON summary into the run directory (not for RUNLESS_COMMANDS) and print it as the
    last stdout line."""
    text = json.dumps(summary, sort_keys=True, default=str)
    if command not in RUNLESS_COMMANDS:
        atomic_write_text(Path(run_dir) / f"{command}.json", text + "\n")
    click.echo(text)


def os_error_message(e: OSError) -> str:
    """What failed, on which file, and for a full disk how much space is left there."""
    where = f": '{e.filename}'" if e.filename else ""
    text = f"{e.strerror or e}{where}"
    if e.errno == errno.ENOSPC:
        folder = Path(e.filename).parent if e.filename else Path.cwd()
        with contextlib.suppress(OSError):
            text += f" ({shutil.disk_usage(folder).free / 2**20:.0f} MiB free in '{folder}')"
        text += "; free space and run the command again (an interrupted extract or a --resume continues)"
    return text


def config_file(given: str | None) -> str | None:
    """The config file a command reads: the one given, else ./pipeline.toml if present, else None (defaults)."""
    if given is not None:
        return given
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None


def _command(fn: Callable[..., dict[str, Any]]) -> Callable[..., None]:
    """Shared options and error handling: ConfigError -> exit 2, PipelineError -> exit 1."""

    @click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
                  help="Pipeline configuration file  [default: pipeline.toml when the folder has one, else the "
                       "built-in defaults]")
    @click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                  help="Override a config key (repeatable); the value is read as TOML.")
    @functools.wraps(fn)
    def wrapper(config_path: str | None, overrides: tuple[str, ...], **kwargs: Any) -> None:
        command = fn.__name__.removeprefix("cmd_")
        try:
            _setup_logging()  # reads RANK: a malformed one is a ConfigError like any other
            if env_world() > 1 and command not in DISTRIBUTED_COMMANDS:
                raise ConfigError(f"`{command}` runs in one process; under torchrun (WORLD_SIZE = {env_world()}) "
                                  f"only {', '.join(DISTRIBUTED_COMMANDS)} run there; start it with `python cli.py`")
            cfg = load_config(config_file(config_path), overrides)
            with command_log(cfg.run.dir, command):
                summary = fn(cfg, **kwargs)
                if env_rank() == 0:  # under torchrun, rank 0 speaks for the launch
                    emit_summary(summary, cfg.run.dir, command)
        except ConfigError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except PipelineError as e:
            click.echo(f"failed: {e}", err=True)
            sys.exit(1)
        except OSError as e:  # a full disk, a lost mount, permissions: while running, so exit status 1
            click.echo(f"failed: {os_error_message(e)}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, "--version", prog_name="icdface")
def main() -> None:
    """ICD-Face distillation: teacher cache (extract), student training (train, distill), evaluation, ONNX
    export, and data conversion (convert)."""


@main.command("extract")
@click.option("--strict", is_flag=True, help="Treat an unreadable image as fatal instead of skipping it.")
@_command
def cmd_extract(cfg: PipelineConfig, strict: bool) -> dict[str, Any]:
    """Stage one: run the teacher once and write the HDF5 embedding cache plus the FAISS index."""
    from stages.extract import run_extract

    return run_extract(cfg, strict=strict)


OVERWRITE_HELP = "Start again in a run.dir that holds checkpoints (they are deleted)."


@main.command("train")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in run.dir.")
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@_command
def cmd_train(cfg: PipelineConfig, resume: bool, overwrite: bool) -> dict[str, Any]:
    """Train the [student] model with the margin loss only (teacher training, no-KD baseline)."""
    from stages.train import run_train

    return run_train(cfg, resume=resume, overwrite=overwrite)


@main.command("distill")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in run.dir.")
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@_command
def cmd_distill(cfg: PipelineConfig, resume: bool, overwrite: bool) -> dict[str, Any]:
    """Stage two: train the student with ICD-Face against the cached teacher embeddings."""
    from stages.distill import run_distill

    return run_distill(cfg, resume=resume, overwrite=overwrite)


@main.command("evaluate")
@_command
def cmd_evaluate(cfg: PipelineConfig) -> dict[str, Any]:
    """Face verification (LFW pairs.txt, insightface .bin) of a student, teacher, cache or checkpoint."""
    from stages.evaluate.command import run_evaluate

    return run_evaluate(cfg)


@main.command("export")
@_command
def cmd_export(cfg: PipelineConfig) -> dict[str, Any]:
    """A student (export.model) -> ONNX with a dynamic batch axis, verified with onnxruntime, plus a model card."""
    from stages.export import run_export

    return run_export(cfg)


@main.command("align")
@click.argument("source", type=click.Path())
@click.argument("output", type=click.Path())
@click.option("--landmarks", default=None, type=click.Path(dir_okay=False),
              help="Given 5-point landmarks ('name x1 y1 .. x5 y5 score' lines, IJB's format): no detection.")
@click.option("--workers", default=None, type=int, help="Processes  [default: data.workers]")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT or an interrupted run with other settings.")
@_command
def cmd_align(cfg: PipelineConfig, source: str, output: str, landmarks: str | None, workers: int | None,
              overwrite: bool) -> dict[str, Any]:
    """Raw photos (folder <identity>/<image> or list file) -> ArcFace 112x112 aligned faces in OUTPUT."""
    from stages.align import run_align

    return run_align(cfg, source, output, landmarks, workers, overwrite)


@main.command("convert")
@click.argument("source", type=click.Path())
@click.argument("output", type=click.Path())
@click.option("--root", default=None, type=click.Path(file_okay=False),
              help="pairs.txt -> .bin: the folder the pairs' images are under (default: the pairs file's folder).")
@_command
def cmd_convert(cfg: PipelineConfig, source: str, output: str, root: str | None) -> dict[str, Any]:
    """Image folder or list file -> .rec/.idx/property; .rec -> image folder; pairs.txt + images -> .bin."""
    from stages.convert import run_convert

    return run_convert(source, output, root)


@main.command("split")
@click.option("--overwrite", is_flag=True, help="Replace an earlier split made with other settings.")
@_command
def cmd_split(cfg: PipelineConfig, overwrite: bool) -> dict[str, Any]:
    """Split [data] by identity: train/held-out list files, an LFW-style pair set and an IJB-layout root."""
    from stages.split import run_split

    return run_split(cfg, overwrite)


@main.command("demo")
@click.option("--quick", is_flag=True, help="A tiny version of the demo for smoke tests.")
@_command
def cmd_demo(cfg: PipelineConfig, quick: bool) -> dict[str, Any]:
    """The whole pipeline on the synthetic default: teacher, cache, three students, report."""
    from stages.demo import run_demo

    return run_demo(cfg, quick=quick)


@main.command("sweep")
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@_command
def cmd_sweep(cfg: PipelineConfig, sweep_file: str) -> dict[str, Any]:
    """Train each variant of SWEEP_FILE on each seed from one cache and compare them on held-out pairs."""
    from stages.sweep import run_sweep

    return run_sweep(cfg, sweep_file)


if __name__ == "__main__":
    main()
