"""The README and docs/ cannot rot: keys, commands, links and wording are checked against the code.

Every `--set section.key=...` and every `` `section.key = value` `` must be a real config key; every command
named (`icdface X`, `python cli.py X`, `python bench/X.py`) must exist and answer `--help`; every relative link
(and its `#anchor`) must resolve; no page speaks of issues or sessions. The checkers are plain functions, tested
on broken text below, so a check that passes cannot be one that never looks.
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SET_KEY = re.compile(r"--set\s+['\"]?([a-z_]+(?:\.[a-z_0-9]+)+)\s*=")
ASSIGNED_KEY = re.compile(r"`([a-z_]+(?:\.[a-z_0-9]+)+) = [^`]+`")
COMMAND = re.compile(r"(?:\bicdface|\bpython3? cli\.py|\bcli\.py)\s+([a-z]+)\b")
BENCH = re.compile(r"\bpython3? (bench/[a-z_0-9]+\.py)\b")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HISTORY = re.compile(r"\bissues? \d+|\bthis session\b|\bsession's\b|\bformer defaults?\b", re.IGNORECASE)


def config_sections() -> set[str]:
    from config import PipelineConfig

    return {f.name for f in dataclasses.fields(PipelineConfig)}


def bad_keys(text: str) -> list[str]:
    """Keys written as `--set k=` or `` `k = v` `` that are not leaves of the config (the latter only where the
    first part names a config section: `cache.direct.GAP_ROWS` is a module path, not a key)."""
    from config import PipelineConfig
    from config.loader import value_at

    cfg, sections = PipelineConfig(), config_sections()
    keys = set(SET_KEY.findall(text)) | {k for k in ASSIGNED_KEY.findall(text) if k.split(".")[0] in sections}
    keys -= {"section.key"}  # the placeholder of the usage line
    bad = []
    for key in sorted(keys):
        try:
            leaf = not dataclasses.is_dataclass(value_at(cfg, key))
        except AttributeError:
            leaf = False
        if not leaf:
            bad.append(key)
    return bad


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than - and _ dropped, spaces -> -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def bad_links(page: Path, text: str | None = None) -> list[str]:
    """Relative links of `page` whose file, or whose `#anchor` in that file, does not exist."""
    text = page.read_text() if text is None else text
    bad = []
    for target in LINK.findall(re.sub(r"```.*?```", "", text, flags=re.S)):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            bad.append(target)
    return bad


def named_commands(text: str) -> set[str]:
    return set(COMMAND.findall(text))


def test_key_checker_finds_a_wrong_key() -> None:
    assert bad_keys("--set loss.sample_rate=0.1 `icd.sigma = 0.1` `cache.direct.GAP_ROWS = 32`") == []
    assert bad_keys("--set loss.sample_rat=0.1") == ["loss.sample_rat"]
    assert bad_keys("`train.lrr = 3`") == ["train.lrr"]
    assert bad_keys("--set 'data.synthetic=3'") == ["data.synthetic"]  # a section, not a key


def test_link_checker_finds_a_missing_page_and_anchor() -> None:
    page = REPO / "docs" / "training.md"
    assert bad_links(page, "[a](method.md) [b](#defaults) [c](https://x.org/y)") == []
    assert bad_links(page, "[a](methods.md) [b](#no-such-heading) [c](method.md#nope)") == [
        "methods.md", "#no-such-heading", "method.md#nope"]


def test_docs_exist_and_the_readme_is_a_front_page() -> None:
    names = {p.name for p in PAGES}
    assert {"method.md", "data.md", "training.md", "evaluation.md", "results.md", "scale.md", "deploy.md",
            "reliability.md", "benchmarks.md", "development.md"} <= names
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_config_key_is_real(page: Path) -> None:
    assert bad_keys(page.read_text()) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    assert bad_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_speaks_of_issues_or_sessions(page: Path) -> None:
    assert HISTORY.findall(page.read_text()) == []


def test_every_cli_command_named_exists_and_answers_help() -> None:
    from click.testing import CliRunner

    import cli

    named = set().union(*(named_commands(p.read_text()) for p in PAGES))
    assert {"align", "extract", "distill", "evaluate", "export"} <= named
    assert sorted(named - set(cli.main.commands)) == []
    for command in sorted(named):
        result = CliRunner().invoke(cli.main, [command, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, (command, result.output)


def test_every_bench_script_named_exists_and_answers_help() -> None:
    scripts = sorted(set().union(*(BENCH.findall(p.read_text()) for p in PAGES)))
    assert scripts and [s for s in scripts if not (REPO / s).is_file()] == []

    def help_of(script: str) -> tuple[str, int, str]:
        done = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        return script, done.returncode, done.stdout + done.stderr

    with ThreadPoolExecutor(4) as pool:
        failed = [(s, out[-500:]) for s, code, out in pool.map(help_of, scripts) if code != 0 or "usage:" not in out]
    assert failed == []
