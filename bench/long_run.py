"""A long run's tracking cost: 200,000 epochs of RustNet's RF task on small data.

Three figures, each from the real code:

* the train stage with tracking (a live recorder: journal, background shipper and
  heartbeat, on a sqlite store) against the same training with no callback, interleaved;
* how much the store (the sqlite file) grows for that run, and how long the end of the
  run takes (the last points, the history artifact, the final status);
* how long ``python -m pipeline`` takes to exit after Ctrl-C and after SIGTERM in the
  middle of such a run, and that the run then is KILLED with its journal complete.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import children
from bench.pipeline_runs import PROJECT_ROOT, CommandFailed, _env, _store_args
from bench.report import markdown_table

EPOCHS = 200_000


@dataclass(frozen=True)
class StopResult:
    signal_name: str
    seconds: float  # from the signal to the process's exit
    exit_code: int
    status: str  # the run's status in the store
    journal_complete: bool  # an end record, and every epoch 1..last
    epochs: int


@dataclass(frozen=True)
class LongRunResult:
    epochs: int
    train_untracked: float
    train_tracked: float
    end_s: float  # the recorder's end: last points, history artifact, status
    store_growth_bytes: int
    points_per_metric: int
    stops: tuple[StopResult, ...]

    @property
    def overhead(self) -> float:
        return self.train_tracked / self.train_untracked - 1.0


_TRAINING = """
import json, os, statistics, sys, time
from pathlib import Path
from pipeline.mlp import TrainSettings
from pipeline.tracking.recorder import start_run
from pipeline.tracking.record import TrainingPlan
from stages.generate import generate_rf
from stages.normalise import normalise
from stages.split import split_dataset
from stages.train import build_model, train_model
epochs, repeats, work = {epochs}, {repeats}, Path({work!r})
train = normalise(split_dataset(generate_rf(n_samples=1000, seed=0), seed=0)).train
db = work / "mlflow.db"
def once(tracked, index):
    model = build_model(train.n_features, train.n_classes, hidden_sizes=[12], seed=0)
    callbacks, recorder = [], None
    if tracked:
        recorder = start_run(uri=f"sqlite:///{{db}}", experiment="bench-long-run",
                             run_name="long-run", output_dir=work / f"run{{index}}", tags={{}},
                             parent_run_id=None, parent_journal_id=None, offline=False,
                             max_points=5000, log_model=False)
        recorder.training_started(TrainingPlan(1, epochs))
        callbacks = [recorder.log_epoch]
        size = db.stat().st_size
    start = time.perf_counter()
    train_model(model, train, None, TrainSettings(learning_rate=0.003, epochs=epochs),
                callbacks=callbacks)
    seconds = time.perf_counter() - start
    if recorder is None:
        return seconds, 0.0, 0
    start = time.perf_counter()
    recorder.end("FINISHED", None)
    return seconds, time.perf_counter() - start, db.stat().st_size - size
once(False, -1)  # warm-up: imports, caches
plain, tracked = [], []
for index in range(repeats):
    plain.append(once(False, index)[0])
    tracked.append(once(True, index))
from mlflow.tracking import MlflowClient
client = MlflowClient(f"sqlite:///{{db}}")
run = client.search_runs([client.get_experiment_by_name("bench-long-run").experiment_id])[0]
points = len(client.get_metric_history(run.info.run_id, "train_loss"))
print(json.dumps({{"plain": statistics.median(plain),
                  "tracked": statistics.median(t[0] for t in tracked),
                  "end": statistics.median(t[1] for t in tracked),
                  "growth": statistics.median(t[2] for t in tracked), "points": points}}))
"""


def measure_training(work: Path, epochs: int = EPOCHS, repeats: int = 3) -> dict[str, float]:
    """The train stage without and with a live recorder, medians of interleaved pairs."""
    code = _TRAINING.format(epochs=epochs, repeats=repeats, work=str(work))
    done = children.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=_env())
    if done.returncode != 0:
        raise CommandFailed("long run: " + (done.stderr.strip().splitlines() or ["?"])[-1])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure_stop(work: Path, sig: signal.Signals, *, epochs: int = EPOCHS,
                 after_epochs: int = 20_000) -> StopResult:
    """Start a long ``python -m pipeline`` run, signal it once ``after_epochs`` epochs are in
    its journal, and time its exit; then read the store and the journal back."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.journal import read_journal

    out = work / f"stop-{sig.name}"
    command = [sys.executable, "-m", "pipeline", *_store_args(work), f"hydra.run.dir={out}",
               f"train.epochs={epochs}", "train.progress=false", "tracking.plots=false"]
    process = children.popen(command, cwd=PROJECT_ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    try:
        _wait_for_epochs(out / "journal.jsonl", after_epochs, process)
        sent = time.perf_counter()
        process.send_signal(sig)
        process.wait(timeout=120)
        seconds = time.perf_counter() - sent
    finally:
        children.end(process, grace_s=0.0)
    journal = read_journal(out / "journal.jsonl")
    steps = journal.epochs()[1][:, 0].astype(int).tolist()
    ended = journal.ended
    complete = (ended is not None and ended["status"] == "KILLED"
                and steps == list(range(1, len(steps) + 1)))
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    status = client.get_run(str(journal.start["run_id"])).info.status
    return StopResult(sig.name, seconds, process.returncode, status, complete, len(steps))


def _wait_for_epochs(journal: Path, count: int, process: subprocess.Popen[str]) -> None:
    from pipeline.tracking.journal import epoch_rows

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CommandFailed(f"the long run exited early ({process.returncode})")
        if journal.exists():
            for line in reversed(journal.read_text().splitlines()[-3:]):
                if line.startswith('{"k":"epochs"'):
                    try:
                        last = epoch_rows(json.loads(line))[-1, 0]
                    except (ValueError, IndexError, KeyError):
                        continue
                    if last >= count:
                        return
                    break
        time.sleep(0.2)
    raise CommandFailed(f"the long run did not reach {count} epochs in 300 s")


def measure_long_run(say: Callable[[str], None], epochs: int = EPOCHS,
                     folder: Path | None = None) -> LongRunResult:
    with tempfile.TemporaryDirectory(prefix="bench-long-run-") as tmp:
        work = folder or Path(tmp)
        say(f"long run: {epochs:,} epochs with and without tracking, interleaved")
        figures = measure_training(work, epochs)
        say("long run: Ctrl-C and SIGTERM in the middle of a run")
        # Signalled well before its end, whatever ``epochs`` is: a short run could end
        # between two of its journal's flushes, before the signal.
        stops = tuple(measure_stop(work, sig, epochs=max(epochs, EPOCHS),
                                   after_epochs=min(20_000, epochs // 4))
                      for sig in (signal.SIGINT, signal.SIGTERM))
    return LongRunResult(epochs, figures["plain"], figures["tracked"], figures["end"],
                         int(figures["growth"]), int(figures["points"]), stops)


def long_run_markdown(result: LongRunResult) -> str:
    r = result
    rows = [
        ["train stage, no tracking", f"{r.train_untracked:.2f} s", ""],
        ["train stage, tracked (journal, shipper, heartbeat)", f"{r.train_tracked:.2f} s",
         f"{100 * r.overhead:+.1f} %"],
        ["end of the run (last points, history.csv, status)", f"{r.end_s:.2f} s", ""],
        ["store growth (sqlite file)", f"{r.store_growth_bytes / 1e6:.2f} MB",
         f"{r.points_per_metric} points per metric"],
    ]
    rows += [[f"exit after {s.signal_name} mid-run", f"{s.seconds:.2f} s",
              f"exit {s.exit_code}, run {s.status}, journal "
              f"{'complete' if s.journal_complete else '**INCOMPLETE**'} ({s.epochs:,} epochs)"]
             for s in r.stops]
    targets = [
        _verdict("tracking's cost to the train stage ≤ 10 %", f"{100 * r.overhead:.1f} %",
                 r.overhead <= 0.10),
        _verdict("store growth ≤ 5 MB", f"{r.store_growth_bytes / 1e6:.2f} MB",
                 r.store_growth_bytes <= 5e6),
        *[_verdict(f"{s.signal_name}: exit ≤ 5 s, run KILLED, journal complete",
                   f"{s.seconds:.2f} s, {s.status}", s.seconds <= 5 and s.status == "KILLED"
                   and s.journal_complete) for s in r.stops],
    ]
    return "\n".join([
        f"### A long run: {r.epochs:,} epochs, RustNet's RF task (800 rows, `[2, 12, 1]`)", "",
        markdown_table(["what", "figure", "note"], rows), "", *targets]) + "\n"


def _verdict(name: str, shown: str, ok: bool) -> str:
    return f"- {name}: {shown}, {'met' if ok else '**MISSED**'}"


if __name__ == "__main__":  # python -m bench.long_run: this part alone
    print(long_run_markdown(measure_long_run(lambda m: print(m, file=sys.stderr))))
