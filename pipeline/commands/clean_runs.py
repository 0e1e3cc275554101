"""``python -m pipeline.commands.clean_runs [--max-age-minutes M] [--uri URI]``.

A process killed hard (SIGKILL, power loss) cannot end its MLflow run, which stays
RUNNING. Runs and sweep parents refresh a heartbeat tag every 15 s while their process
lives; this marks every RUNNING run whose heartbeat is older than ``--max-age-minutes``
(default 10) as KILLED, and never one whose heartbeat is younger than three of its
periods, whatever the age given. (Its journal can still be sent afterwards: ``make sync``.)
"""

from __future__ import annotations

import argparse
import sys

from pipeline.errors import PipelineError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.commands.clean_runs",
                                     description=__doc__)
    parser.add_argument("--max-age-minutes", type=float, default=10.0)
    parser.add_argument("--uri", default=None, help="tracking URI (default: "
                        "MLFLOW_TRACKING_URI, else the project's mlflow.db)")
    args = parser.parse_args(argv)
    from pipeline.tracking.runs import LIVE_WITHIN_S, mark_stale_runs  # MLflow: after --help

    if args.max_age_minutes * 60 < LIVE_WITHIN_S:
        print(f"--max-age-minutes {args.max_age_minutes:g} is below the heartbeat's floor: "
              f"runs whose heartbeat is younger than {LIVE_WITHIN_S:.0f} s are alive and "
              "left alone")
    try:
        killed = mark_stale_runs(args.uri, args.max_age_minutes * 60)
    except PipelineError as error:
        print(error, file=sys.stderr)
        return 1
    for run_id in killed:
        print(f"marked KILLED: {run_id}")
    print(f"{len(killed)} stale run(s) marked KILLED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
