"""The README and docs/ stay short, linked and runnable as written.

Reads README.md and docs/*.md as text: no run, no MLflow. What a newcomer copies from them
must work on a fresh clone without activating the virtualenv, so commands go through the
make targets or `.venv/bin/python -m pipeline ...`.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Written by another hand, with commands of its own: checked by tests/test_architecture_docs.py.
ARCHITECTURE = DOCS / "architecture.md"
MAX_README_LINES = 260

FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
MAKE = re.compile(r"(?:^|[\s;&|(])make\s+([^\n#]*)")
CONF_PATH = re.compile(r"\bconf/[A-Za-z0-9_./-]*")
# `python -m pipeline` typed without the venv's python: "No module named 'hydra'".
BARE_PYTHON = re.compile(r"(?<![/\w])python3?(\.\d+)? -m (pipeline|stages|bench)\b")
MODULE = re.compile(r"-m (pipeline(?:\.[\w.]+)?)")
MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", re.MULTILINE)


def pages() -> list[Path]:
    """README.md and every docs page but architecture.md."""
    return [README, *sorted(p for p in DOCS.glob("*.md") if p != ARCHITECTURE)]


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def strip_fences(text: str) -> str:
    """The text outside fenced code blocks (links and headings in code are not links)."""
    return FENCE.sub("", text)


def code_blocks(text: str) -> list[str]:
    """The bodies of the fenced code blocks."""
    return FENCE.findall(text)


def code(text: str) -> list[str]:
    """Every piece of code a reader may copy: fenced blocks and inline code spans."""
    return [*code_blocks(text), *INLINE.findall(strip_fences(text))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(strip_fences(path.read_text()))}


def relative_links(path: Path) -> list[str]:
    """The links of a page that point into the repository (not the web, not mail)."""
    links = LINK.findall(strip_fences(path.read_text()))
    return [link for link in links if not re.match(r"[a-z][a-z0-9+.-]*:", link)]


def make_targets() -> set[str]:
    return set(MAKE_TARGET.findall((ROOT / "Makefile").read_text())) - {".PHONY"}


def targets_named(command: str) -> list[str]:
    """The targets a `make ...` command line asks for (variables and options skipped)."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:  # an inline span cut inside quotes: the words before the quote
        words = command.split("'")[0].split('"')[0].split()
    names = []
    for word in words:
        if word in {"&&", "||", ";", "|", "\\"}:
            break
        if "=" in word or word.startswith("-"):
            continue
        if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
            break
        names.append(word)
    return names


def test_the_readme_reads_in_ten_minutes() -> None:
    lines = README.read_text().count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (at most {MAX_README_LINES}): move detail to docs/")


def test_the_docs_pages_exist_and_link_back_to_the_readme() -> None:
    docs = [p for p in pages() if p != README]
    assert docs, "docs/ has no pages"
    for page in docs:
        assert "](../README.md" in page.read_text(), f"{page_id(page)} does not link to the README"


@pytest.mark.parametrize("page", pages(), ids=page_id)
def test_every_relative_link_points_to_a_file_and_a_heading(page: Path) -> None:
    broken = []
    for link in relative_links(page):
        target, _, anchor = link.partition("#")
        file = (page.parent / target).resolve() if target else page
        if file == ARCHITECTURE:
            continue  # architecture.md: checked by tests/test_architecture_docs.py
        if not file.exists():
            broken.append(f"{link}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{link}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page_id(page)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", pages(), ids=page_id)
def test_every_make_command_shown_is_a_target(page: Path) -> None:
    known = make_targets()
    shown = {name for snippet in code(page.read_text())
             for command in MAKE.findall(snippet) for name in targets_named(command)}
    if page == README:
        assert shown, "README.md shows no make command"
    assert shown <= known, f"{page_id(page)}: not Makefile targets: {sorted(shown - known)}"


@pytest.mark.parametrize("page", pages(), ids=page_id)
def test_commands_run_without_activating_the_virtualenv(page: Path) -> None:
    """`python -m pipeline` only as `.venv/bin/python -m pipeline` (or a make target)."""
    bare = [snippet for snippet in code(page.read_text()) if BARE_PYTHON.search(snippet)]
    assert not bare, f"{page_id(page)}: use .venv/bin/python or a make target in: {bare}"


@pytest.mark.parametrize("page", pages(), ids=page_id)
def test_command_modules_are_named_by_their_new_home(page: Path) -> None:
    """Command modules move to pipeline.commands.*; only that and `-m pipeline` are shown."""
    modules = {m for snippet in code(page.read_text())
               for m in MODULE.findall(snippet)}
    stale = {m for m in modules if m != "pipeline" and not m.startswith("pipeline.commands.")}
    assert not stale, f"{page_id(page)}: use a make target instead of {sorted(stale)}"


@pytest.mark.parametrize("page", pages(), ids=page_id)
def test_every_conf_path_mentioned_exists(page: Path) -> None:
    mentioned = {m.rstrip(".") for m in CONF_PATH.findall(page.read_text())}
    missing = sorted(m for m in mentioned if not (ROOT / m).exists())
    assert not missing, f"{page_id(page)} names config files that do not exist: {missing}"


def test_the_checks_see_what_they_look_for() -> None:
    """The parsers above find bad commands and links in a sample (a check that cannot fail
    is a defect)."""
    sample = ("See [x](missing.md) and ![i](docs/scaling.png).\n```bash\n"
              "make bogus-target RUN_ID=1\nmake bench ARGS=\"--only startup csv\"\n"
              "SERVER_PORT=5003 make train ARGS=tracking=server\n"
              "python -m pipeline.rerun abc\n.venv/bin/python -m pipeline.commands.sync d\n```\n"
              "Also `make PYTHON=/usr/bin/python3.11 test` and `conf/data/nope.yaml`.\n"
              "1. In a list:\n\n   ```bash\n   make lint-all\n   ```\n")
    assert LINK.findall(sample) == ["missing.md", "docs/scaling.png"]
    commands = [c for snippet in code(sample) for c in MAKE.findall(snippet)]
    assert [targets_named(c) for c in commands] == [
        ["bogus-target"], ["bench"], ["train"], ["lint-all"], ["test"]]
    block = code_blocks(sample)[0]
    assert [m.group(0) for m in BARE_PYTHON.finditer(block)] == ["python -m pipeline"]
    assert MODULE.findall(block) == [
        "pipeline.rerun", "pipeline.commands.sync"]
    assert CONF_PATH.findall(sample) == ["conf/data/nope.yaml"]
    assert slug("The journal: a run's record is never lost") == (
        "the-journal-a-runs-record-is-never-lost")
    assert slug("Sweeps: compare many configurations") == "sweeps-compare-many-configurations"
