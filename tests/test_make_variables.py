"""The Makefile: every target that touches a store takes STORE=, and a variable a target does
not know stops it in one line instead of being silently ignored."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from pipeline.tracking.store import open_store

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
# A make started by `make test` passes its own command-line variables down: not the user's.
ENV = {k: v for k, v in os.environ.items()
       if k not in ("MLFLOW_TRACKING_URI", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")}


def make(*args: str, env: dict[str, str] | None = None,
         timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "--no-print-directory", "-C", str(PROJECT_ROOT), *args],
                          env=env or ENV, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(("target", "given", "known"), [
    ("ui", "port=5101", "PORT"),
    ("train", "ARG=optimizer=adam", "ARGS"),
    ("serve", "RUNID=abc", "RUN_ID"),
    ("sweep", "store=sqlite:///x.db", "STORE"),
])
def test_a_variable_the_target_does_not_know_stops_it_in_one_line(target, given,
                                                                   known) -> None:
    done = make("-n", target, given)
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    name = given.split("=", 1)[0]
    assert f"make {target}" in lines[0] and name in lines[0] and known in lines[0], lines[0]
    assert "nothing ran" in lines[0], lines[0]


def test_known_variables_pass() -> None:
    done = make("-n", "ui", "PORT=5101", "HOST=127.0.0.1", "STORE=sqlite:////tmp/x.db")
    assert done.returncode == 0, done.stderr


STORE = "sqlite:////tmp/some/where.db"


@pytest.mark.parametrize(("target", "extra", "expected"), [
    ("train", [], f"tracking.uri={STORE}"),
    ("sweep", [], f"tracking.uri={STORE}"),
    ("tune", [], f"tracking.uri={STORE}"),
    ("rerun", ["RUN_ID=abc"], f"--uri '{STORE}'"),
    ("compare", ["RUNS=abc"], f"--uri '{STORE}'"),
    ("sync", ["DIR=/tmp/out"], f"--uri '{STORE}'"),
    ("serve", ["RUN_ID=abc"], f"--uri '{STORE}'"),
    ("log-model", ["RUN_ID=abc"], f"--uri '{STORE}'"),
    ("plots", ["RUN_ID=abc"], f"--uri '{STORE}'"),
    ("clean-runs", [], f"--uri '{STORE}'"),
    ("ui", [], f"--uri '{STORE}'"),
])
def test_every_target_that_touches_a_store_takes_store(target, extra, expected) -> None:
    done = make("-n", target, f"STORE={STORE}", *extra)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout, done.stdout


@pytest.mark.slow
def test_make_rerun_finds_the_run_in_the_store_mlflow_tracking_uri_names(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = open_store(uri).client
    run = client.create_run(client.create_experiment("e"))
    client.set_terminated(run.info.run_id)
    done = make("rerun", f"RUN_ID={run.info.run_id}",
                env={**ENV, "MLFLOW_TRACKING_URI": uri}, timeout=120)
    # Found (it has no config to rerun), not "is not in the store <the project's store>".
    assert "has no config.yaml artifact" in done.stderr, done.stderr
    assert MlflowClient(uri).get_run(run.info.run_id).info.status == "FINISHED"
