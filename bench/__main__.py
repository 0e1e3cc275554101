"""``python -m bench [--quick] [--only PART ...] [--threads N] [--no-memory] [--needs-torch]``.

Parts: W1 W2 W3 scaling (the core), startup sweep longrun (the pipeline end to end; sweep:
the speed-up on 2 workers and the per-job cost of 8-, 32- and 256-job sweeps), csv
(loading a 1,000,000-row CSV: time and peak memory against the file's size).

Ctrl-C or SIGTERM stop the bench and every process it started (:mod:`bench.children`).
``--needs-torch`` runs nothing: it exits 0 when the parts asked for compare against PyTorch
(``make bench`` installs it from the local wheel only then), else 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import children
from bench.contenders import ALL_KEYS
from bench.pipeline_runs import DEFAULT_SWEEPS, QUICK_SWEEPS
from bench.run import RESULTS_DIR, Plan, run_benchmark
from bench.scaling import ScalingPlan
from bench.sweep_cost import DEFAULT_COST, QUICK_COST
from bench.workloads import standard_workloads

PARTS = ("W1", "W2", "W3", "scaling", "startup", "sweep", "longrun", "csv")
TORCH_PARTS = {"W1", "W2", "W3", "scaling"}  # the only parts that run PyTorch
# --quick: about a minute in all on 2 busy cores (a smoke test with rough figures).
QUICK_SCALING = ScalingPlan(rows=(10**2, 10**3, 10**4), widths=(8, 32),
                            width_rows=2_000, target_flops=3e7, max_epochs=5, repeats=1,
                            memory_keys=())
QUICK_STARTUP_REPEATS = 1
QUICK_LONG_RUN_EPOCHS = 10_000
QUICK_CSV_ROWS = 100_000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Speed of the NumPy MLP core against a textbook NumPy loop, scikit-learn "
                    "and PyTorch; the pipeline's start-up, a sweep's parallel speed-up and per-job "
                    "cost, and a long run's tracking cost. Results: stdout and "
                    "bench/results/.")
    parser.add_argument("--quick", action="store_true",
                        help="shorter runs and a smaller scaling study (about a minute)")
    parser.add_argument("--only", nargs="+", choices=PARTS, metavar="PART",
                        help=f"run only these parts, of {', '.join(PARTS)}")
    parser.add_argument("--threads", type=int, default=2,
                        help="BLAS/OpenMP/torch threads for every contender (default 2)")
    parser.add_argument("--contenders", nargs="+", choices=ALL_KEYS, default=list(ALL_KEYS),
                        help="which contenders to run (default all that are installed)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory subprocesses")
    parser.add_argument("--needs-torch", action="store_true",
                        help="run nothing; exit 0 if these parts compare against PyTorch")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help=f"output directory (default {RESULTS_DIR})")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The Plan the command line asks for."""
    parts = set(args.only or PARTS)
    workloads = tuple(w for w in standard_workloads(args.quick) if w.name in parts)
    scaling = None
    if "scaling" in parts:
        scaling = QUICK_SCALING if args.quick else ScalingPlan()
    sweeps = (QUICK_SWEEPS if args.quick else DEFAULT_SWEEPS) if "sweep" in parts else ()
    startup = 0
    if "startup" in parts:
        startup = QUICK_STARTUP_REPEATS if args.quick else 3
    sweep_cost = (QUICK_COST if args.quick else DEFAULT_COST) if "sweep" in parts else None
    return Plan(workloads=workloads, contender_keys=tuple(args.contenders),
                startup_repeats=startup,
                sweeps=sweeps, sweep_cost=sweep_cost,
                long_run_epochs=((QUICK_LONG_RUN_EPOCHS if args.quick else 200_000)
                                 if "longrun" in parts else 0),
                threads=args.threads, memory=not args.no_memory,
                memory_keys=("core",) if args.quick else None,
                verify_epochs=300 if args.quick else 500, scaling=scaling, out_dir=args.out,
                mode="quick" if args.quick else "full")


def needs_torch(args: argparse.Namespace) -> bool:
    """Whether the parts asked for run PyTorch as a contender."""
    return "torch" in args.contenders and bool(set(args.only or PARTS) & TORCH_PARTS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print bench.md (and scaling.md, csv.md) to stdout; Ctrl-C or
    SIGTERM end every process it started before it exits (130 / 143)."""
    args = parse_args(argv)
    if args.needs_torch:
        return 0 if needs_torch(args) else 1
    children.install_stop_handlers()
    try:
        return run_parts(args)
    except KeyboardInterrupt as stop:
        children.end_all()
        word = "terminated" if isinstance(stop, children.Stopped) else "interrupted"
        print(f"[bench] {word}: every process it started has ended", file=sys.stderr)
        return 143 if isinstance(stop, children.Stopped) else 130
    finally:
        children.end_all()


def run_parts(args: argparse.Namespace) -> int:
    """The parts the command line asks for."""
    parts = set(args.only or PARTS)
    if parts - {"csv"}:
        text, scaling_text = run_benchmark(plan_from_args(args))
        print(text)
        if scaling_text:
            print(scaling_text)
    if "csv" in parts:  # its own file: it needs none of the contenders
        from bench.csv_load import csv_markdown, measure_csv_loads
        from bench.run import log

        csv_text = csv_markdown(measure_csv_loads(log, QUICK_CSV_ROWS) if args.quick
                                else measure_csv_loads(log))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "csv.md").write_text(csv_text, encoding="utf-8")
        print(csv_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
