"""``python -m pipeline.commands.complete <run_id> [--model] [--plots] [--uri URI]``:
complete a run's record afterwards (``make log-model``, ``make plots``).

A lean sweep job (``sweep.child_record=lean``), and a run made with
``tracking.log_model=false`` or ``tracking.plots=false``, has no MLflow model or no plots.
This adds them to the run itself, which keeps its status and end time:

* ``--model``: the pyfunc model, logged from the run's ``checkpoints/final.json`` exactly as
  a full run logs it (``models:/<model_id>``, servable with ``make serve RUN_ID=<id>``);
* ``--plots``: the plots, redrawn from the run's own record (its stored ``config.yaml``, the
  same seeded and cached data stages, the final checkpoint and ``history.csv``) and logged
  at a full run's paths, once the redrawn test predictions are found equal to the run's
  ``predictions.csv`` (the plots must describe that run, not a CSV changed since).

Neither flag: both. What a run has already is left as it is; either way the tag
``model_logged`` / ``plots_logged`` ends "true". ``--uri`` picks the store (default:
``MLFLOW_TRACKING_URI`` if set, else the project's ``mlflow.db``). A problem (an unknown
run, a run without a final checkpoint, a data file gone) is one line on stderr and exit 1.
The work is :func:`pipeline.run.backfill.complete_run`.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.errors import PipelineError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.commands.complete",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_id", help="the MLflow run to complete")
    parser.add_argument("--model", action="store_true", help="log the run's MLflow model")
    parser.add_argument("--plots", action="store_true", help="draw and log the run's plots")
    parser.add_argument("--uri", default=None, help="the store's tracking URI (default: "
                        "MLFLOW_TRACKING_URI, else the project's mlflow.db)")
    parser.add_argument("--plugins", default="", help="comma-separated modules of the run's "
                        "pipeline.plugins that you trust: redrawing its plots imports them (a "
                        "stored config alone never makes it)")
    args = parser.parse_args(argv)
    run_id = args.run_id.strip()
    if not run_id or run_id.startswith("-"):
        print("usage: python -m pipeline.commands.complete <run_id> [--model] [--plots] "
              "[--uri URI]", file=sys.stderr)
        return 2
    # Completing brings in MLflow (~1 s): not for a usage error.
    from pipeline.run.backfill import complete_run

    both = not args.model and not args.plots
    try:
        done = complete_run(run_id, uri=args.uri or None, model=args.model or both,
                            plots=args.plots or both,
                            plugins=[p.strip() for p in args.plugins.split(",") if p.strip()])
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for line in done.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
