"""``python -m pipeline.commands.compare``: what differs between runs, from a real sqlite store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from pipeline.commands.compare import main, number, signed
from pipeline.config.paths import PROJECT_ROOT
from tests.conftest import FAST

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
QUICK = [*FAST, "tracking.plots=false", "tracking.log_model=false"]
EPOCHS = 300  # FAST's train.epochs


@dataclass(frozen=True)
class Made:
    uri: str
    parent: str
    children: list[str]  # seed=1, then seed=2 (the order they started)
    twins: list[str]  # two runs of one config (seed=3)


def _pipeline(tmp: Path, uri: str, *args: str, multirun: bool = False) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *(["-m"] if multirun else []), f"tracking.uri={uri}",
         *QUICK,
         f"pipeline.cache_dir={tmp / 'cache'}", *args],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """A sweep seed=1,2 (a parent and two children), then two runs of one config (seed=3)."""
    from pipeline.tracking.runs import Runs

    tmp = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    _pipeline(tmp, uri, "seed=1,2", f"hydra.sweep.dir={tmp / 'sweep'}", multirun=True)
    for name in ("a", "b"):
        _pipeline(tmp, uri, "seed=3", f"hydra.run.dir={tmp / name}")
    client = Runs(uri).store.client
    found = client.search_runs([client.get_experiment_by_name("mlp-pipeline").experiment_id],
                               order_by=["attributes.start_time ASC"])
    parent = [r.info.run_id for r in found if r.data.tags.get("sweep") == "parent"]
    children = [r.info.run_id for r in found if r.data.tags.get("mlflow.parentRunId")]
    twins = [r.info.run_id for r in found if r.data.params.get("seed") == "3"]
    assert len(parent) == 1 and len(children) == 2 and len(twins) == 2, found
    return Made(uri, parent[0], children, twins)


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _section(out: str, title: str) -> list[str]:
    """The lines of one section of the text table, its title line first."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def _names(section: list[str]) -> list[str]:
    return [line.split()[0] for line in section[3:]]  # below the title, header and rule


# -- no store needed ---------------------------------------------------------------------
def test_history_csv_is_read_back_exactly_and_divergence_found() -> None:
    from pipeline.tracking.comparison import as_history, diverge
    from pipeline.tracking.runs import read_history

    class OneHistory:  # what read_history reads: a run's artifact as text
        def read_text(self, run_id: str, path: str) -> str | None:
            return ("epoch,train_loss,val_loss\n1,0.1,0.5\n2,0.30000000000000004,nan\n"
                    "3,0.2,0.4\n") if path == "history.csv" else None

    frame = read_history(OneHistory(), "run")  # type: ignore[arg-type]
    assert frame is not None
    a = as_history(frame)
    assert a["train_loss"] == {1: 0.1, 2: 0.30000000000000004, 3: 0.2}
    b = {"train_loss": {1: 0.1, 2: 0.3, 3: 0.2}, "val_loss": {1: 0.5, 2: float("nan")}}
    found = {d.metric: d for d in diverge(a, b)}
    assert found["train_loss"].epoch == 2  # the last bit counts
    assert found["train_loss"].values == (0.30000000000000004, 0.3)
    assert found["val_loss"].epoch is None and not found["val_loss"].identical  # NaN == NaN
    assert (found["val_loss"].common, found["val_loss"].lengths) == (2, (3, 2))
    assert diverge(a, a)[0].identical


def test_number_cells() -> None:
    assert (number(0.965), signed(1.0 - 0.995)) == ("0.9650", "+0.0050")
    assert signed(-3e-9) == "-3.00e-09"  # never reads as no change
    assert number(None) == "—"


def test_no_run_id_is_one_line_and_exit_1(capsys) -> None:
    code, out, err = _main(capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: no run id given")


def test_a_store_that_does_not_exist_is_not_created(capsys, tmp_path) -> None:
    db = tmp_path / "none" / "mlflow.db"
    code, _, err = _main(capsys, "0" * 32, "--uri", f"sqlite:///{db}")
    assert code == 1 and err.count("\n") == 1 and str(db) in err
    assert not db.parent.exists()


# -- against real runs -------------------------------------------------------------------
@pytest.mark.slow
def test_two_children_params_metrics_and_digests(made, capsys) -> None:
    from pipeline.tracking.runs import Runs

    runs = Runs(made.uri)
    first, second = (runs.get(run_id) for run_id in made.children)
    code, out, err = _main(capsys, *made.children, "--uri", made.uri)
    assert code == 0, err

    params = _section(out, "params")
    assert set(_names(params)) == {"seed", "seeds.data", "seeds.split", "seeds.init",
                                   "seeds.shuffle"}
    assert "optimizer.lr" not in "\n".join(params)
    equal = sum(first.params[k] == second.params.get(k) for k in first.params)
    assert params[0] == f"params: 5 differ, {equal} equal" and equal > 30

    metrics = {line.split()[0]: line.split() for line in _section(out, "final metrics")[3:]}
    assert not any(name.startswith("time_") for name in metrics)
    for name, a in first.metrics.items():
        if name.startswith("time_"):
            continue
        b = second.metrics[name]
        cells = metrics[name]
        assert cells[1:3] == [number(a), number(b)]
        assert cells[3:] == ([signed(b - a), "differs"] if a != b else ["same"])
    assert "time_train_s" in "\n".join(_section(out, "stage times"))

    digests = {line.split()[0]: line.split() for line in _section(out, "config, data")[3:]}
    for tag in ("config_digest", "data_digest", "checkpoint_sha256", "predictions_sha256"):
        assert digests[tag][1:] == [first.tags[tag][:12], second.tags[tag][:12], "differs"]
    code_rows = {line.split()[0]: line.split() for line in _section(out, "code")[3:]}
    assert code_rows["git_commit"][-1] == "same"
    environment = {line.split()[0]: line.split()[-1] for line in _section(out, "environment")[3:]}
    assert set(environment) == {"python_version", "platform", "blas", "blas_threads",
                                "train_threads"}
    assert re.search(r"^packages \(versions that differ\): all \d{2,} equal$", out, re.M)

    history = {line.split()[0]: line for line in _section(out, "history")[3:]}
    assert history["train_loss"].endswith("diverges at epoch 1")
    assert "from each run's history.csv" in out
    for run_id in made.children:
        assert f"/runs/{run_id}?workflowType=machine_learning" in out
    assert "#/compare-runs?runs=" in out and made.children[1] in out.splitlines()[-1]


@pytest.mark.slow
def test_a_parent_expands_to_its_children(made, capsys) -> None:
    from pipeline.tracking.comparison import compare

    comparison = compare(made.uri, [made.parent])
    assert [run.run_id for run in comparison.runs] == made.children
    assert [run.run_id for run in comparison.parents] == [made.parent]
    code, out, _ = _main(capsys, made.parent, f"tracking.uri={made.uri}")
    assert code == 0
    assert out.splitlines()[0].endswith(f"(the children of sweep {made.parent[:8]})")
    assert _names(_section(out, "params"))[0] == "seed"


@pytest.mark.slow
def test_same_config_and_a_run_with_itself_are_identical(made, capsys) -> None:
    for pair in (made.twins, [made.children[0]] * 2):
        code, out, _ = _main(capsys, *pair, "--uri", made.uri)
        assert code == 0
        history = _section(out, "history")[3:]
        assert len(history) == 6  # train_/val_ loss, mse, accuracy (default: a val split)
        assert all(line.endswith(f"identical over {EPOCHS} epochs") for line in history)
        assert _section(out, "params")[0].startswith("params: all ")
        digests = _section(out, "config, data")[3:]
        assert all(line.endswith("same") for line in digests), digests


@pytest.mark.slow
def test_history_falls_back_to_the_store(made, capsys, monkeypatch) -> None:
    from pipeline.tracking.runs import Runs

    read = Runs.read_text
    monkeypatch.setattr(Runs, "read_text", lambda self, run_id, path: None
                        if path == "history.csv" else read(self, run_id, path))
    code, out, _ = _main(capsys, *made.children, "--uri", made.uri)
    assert code == 0
    assert "#1 from store, #2 from store; the store may hold thinned points" in out
    history = {line.split()[0]: line for line in _section(out, "history")[3:]}
    assert set(history) == {"train_loss", "train_mse", "train_accuracy", "val_loss", "val_mse",
                            "val_accuracy"}
    assert history["train_loss"].endswith("diverges at epoch 1")


@pytest.mark.slow
def test_file_formats(made, capsys, tmp_path, monkeypatch) -> None:
    from pipeline.tracking.runs import Runs

    first, second = (Runs(made.uri).get(run_id) for run_id in made.children)
    path = tmp_path / "out.csv"
    code, out, _ = _main(capsys, *made.children, "--uri", made.uri, "--output", str(path))
    assert code == 0 and out.startswith(f"wrote {path} (csv, 2 runs)")
    table = pd.read_csv(path, dtype={"name": str})
    a, b = (f"#{i} {run_id}" for i, run_id in enumerate(made.children, 1))
    params = table[(table.section == "params") & (table.status == "differs")]
    assert set(params.name) == {"seed", "seeds.data", "seeds.split", "seeds.init",
                                "seeds.shuffle"}
    row = table[(table.section == "final metrics") & (table.name == "test_log_loss")].iloc[0]
    values = float(row[a]), float(row[b])  # the run columns hold text too: read as str
    assert values == (first.metrics["test_log_loss"], second.metrics["test_log_loss"])
    assert row[f"delta {b}"] == values[1] - values[0]
    digest = table[table.name == "data_digest"].iloc[0]
    assert digest[a] == first.tags["data_digest"]  # full hashes in CSV
    history = table[(table.section == "history") & (table.name == "train_loss")].iloc[0]
    assert history["epoch"] == 1 and history["status"] == "diverges at epoch 1"

    monkeypatch.chdir(tmp_path)
    code, out, _ = _main(capsys, *made.children, "--uri", made.uri, "--format", "md")
    markdown = (tmp_path / "compare.md").read_text()
    assert code == 0 and str(tmp_path / "compare.md") in out
    assert "| seed | 1 | 2 | differs |" in markdown
    assert f"| test_accuracy | {number(first.metrics['test_accuracy'])} |" in markdown
    assert "_5 differ, " in markdown and "#/compare-runs?runs=" in markdown

    code, _, _ = _main(capsys, made.parent, "--uri", made.uri, "--format", "html")
    page = (tmp_path / "compare.html").read_text()
    assert code == 0 and "<td>seeds.init</td>" in page
    params_table = page.split("<h2>params</h2>")[1].split("</table>")[0]
    assert params_table.count("<td>differs</td>") == 5


@pytest.mark.slow
def test_unknown_id_and_a_lone_run_are_one_line_errors(made, capsys) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.commands.compare", made.children[0], "f" * 32,
         "--uri", made.uri], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120,
        env=ENV)
    assert done.returncode == 1 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "f" * 32 in done.stderr
    code, out, err = _main(capsys, made.twins[0], "--uri", made.uri)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "nothing to compare" in err
