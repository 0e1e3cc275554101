"""Every training command the README shows runs as written (a newcomer copies them).

Each ``make train ARGS="..."`` and ``.venv/bin/python -m pipeline ...`` line of the README's
code blocks runs as ``python -m pipeline`` with the line's own overrides, plus only what
keeps the test apart from the project: a temporary store and output folders, few epochs,
and the project's example CSV where the README writes a placeholder path.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
COMMAND = re.compile(r"^\s*(?:make train ARGS=(\"[^\"]*\")|\.venv/bin/python -m pipeline (.*?))"
                     r"\s*(?:#.*)?$", re.MULTILINE)
# The README's placeholders, and what stands in for them here.
PLACEHOLDERS = {"/path/to/my.csv": str(ROOT / "data" / "rustnet_diabetes.csv"),
                "data.label_column=outcome": "data.label_column=8"}


def _filled(word: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        word = word.replace(placeholder, value)
    return word


def readme_commands() -> list[list[str]]:
    """The overrides of each training command in the README's code blocks."""
    commands = []
    for block in FENCE.findall(README.read_text(encoding="utf-8")):
        for make_args, python_args in COMMAND.findall(block):
            words = shlex.split(shlex.split(make_args)[0]) if make_args else shlex.split(
                python_args)
            commands.append([_filled(word) for word in words])
    return commands


def test_the_readme_shows_training_commands() -> None:
    commands = readme_commands()
    assert len(commands) >= 8, commands
    assert any("data.transforms" in " ".join(c) for c in commands)
    assert any("-m" in c for c in commands)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", readme_commands(), ids=lambda c: " ".join(c)[:60])
def test_each_readme_training_command_runs(overrides: list[str], tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    sweep = "-m" in overrides
    isolation = [f"tracking.uri=sqlite:///{db}", "train.epochs=20", "train.progress=false",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}" if sweep else
                 f"hydra.run.dir={tmp_path / 'run'}", f"pipeline.cache_dir={tmp_path / 'cache'}"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-m", "pipeline", *overrides, *isolation],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, (overrides, done.stderr[-3000:])
    assert "Traceback" not in done.stderr
    if "tracking.mode=offline" in overrides:
        assert (tmp_path / "run" / "journal.jsonl").is_file()
        return
    runs = MlflowClient(f"sqlite:///{db}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{db}").search_experiments()])
    assert runs and all(r.info.status == "FINISHED" for r in runs), [
        (r.info.status, r.data.tags.get("error")) for r in runs]
