"""A run's plots drawn by the process forked as it starts, and timings that add up.

Real runs on a temporary sqlite store, read back with MlflowClient.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from pipeline.config.schema import validate
from pipeline.run import artifacts
from pipeline.run.runner import run
from pipeline.run.timeline import process_age, timing_line, with_other
from tests.conftest import FAST

PARTS = ("startup", "setup", "generate", "split", "preprocess", "train", "evaluate",
         "results", "plots", "tracking", "other")


def test_process_age_counts_from_the_process_start() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import time; time.sleep(0.3); "
         "from pipeline.run.timeline import process_age; print(process_age())"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, check=True)
    assert 0.3 <= float(done.stdout) < 10.0
    assert process_age() > 0


def test_the_timing_line_adds_the_rest_as_other() -> None:
    parts = with_other({"startup": 1.0, "train": 0.5}, 2.0)
    assert parts == {"startup": 1.0, "train": 0.5, "other": 0.5}
    assert timing_line(parts, 2.0) == "time total 2.00 s = startup 1.00 + train 0.50 + other 0.50"
    assert with_other({"a": 3.0}, 2.0)["other"] == 0.0


@pytest.mark.slow  # one real run with plots: ~5 s
def test_the_plot_process_draws_the_same_pixels_and_timings_are_logged(
        compose_cfg, tmp_path, isolated, store, monkeypatch) -> None:
    handed: list[tuple[Path, artifacts.PlotInputs]] = []
    draw = artifacts.PlotJob.draw

    def keep(self: artifacts.PlotJob, folder: Path, inputs: artifacts.PlotInputs):
        handed.append((folder, inputs))
        return draw(self, folder, inputs)

    monkeypatch.setattr(artifacts.PlotJob, "draw", keep)
    config = validate(compose_cfg(*FAST, *isolated, "tracking.plots=true"))
    result = run(config, output_dir=tmp_path / "out")
    [(folder, inputs)] = handed
    drawn = artifacts.write_plots(tmp_path / "inline", inputs)  # as the old plot process did
    for name, path in drawn.items():
        mine = folder / path.relative_to(tmp_path / "inline")
        assert np.array_equal(imread(mine), imread(path)), name

    client = MlflowClient(store)
    finished = client.get_run(result.run_id)
    assert finished.info.status == "FINISHED"
    metrics = finished.data.metrics
    logged = {part: metrics[f"time_{part}_s"] for part in PARTS}
    assert sum(logged.values()) == pytest.approx(metrics["time_total_s"], rel=1e-6)
    assert finished.data.tags.get("plots_logged", "true") == "true"


@pytest.mark.slow  # one real `python -m pipeline`: ~5 s
def test_a_runs_timings_add_up_to_its_wall_time(tmp_path, store) -> None:
    command = [sys.executable, "-m", "pipeline", f"tracking.uri={store}", *FAST,
               f"pipeline.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'out'}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    [line] = [line for line in (done.stdout + done.stderr).splitlines() if "time total" in line]
    total = float(re.search(r"time total (\d+\.\d+) s", line).group(1))
    for part in ("startup", "setup", "train", "plots", "tracking"):
        assert f" {part} " in line, part
    # The exit (and Python's own start) are outside the run: generous on a busy machine.
    assert 0.75 * wall <= total <= wall, (total, wall)


def test_an_unused_plot_process_ends_as_soon_as_it_is_closed() -> None:
    job = artifacts.start_plot_process()
    started = time.monotonic()
    job.close()  # the run failed before its plots: the process must not linger
    assert job._process is not None and not job._process.is_alive()
    assert time.monotonic() - started < 1.0  # not a wait for matplotlib's import


def test_a_plot_process_that_cannot_draw_leaves_the_run_without_plots(tmp_path) -> None:
    job = artifacts.start_plot_process()
    job.draw(tmp_path, None)  # type: ignore[arg-type]  (no inputs to draw from)
    assert job.wait() is False
