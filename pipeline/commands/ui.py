"""``python -m pipeline.commands.ui [--uri URI] [--host HOST] [--port PORT]``: the MLflow UI
on a store (``make ui``).

Creates the store first if it is new (under the lock every run takes, never by the UI at the
same moment as a run), records the UI's address beside a sqlite store so that the links
runs, sweeps and ``make compare`` print open this UI (``tracking.ui_url`` overrides it),
prints the UI's link, then becomes ``mlflow ui``. The store: ``--uri``, else
``MLFLOW_TRACKING_URI``, else the project's ``mlflow.db``. A tracking server already has its
own UI: for an http(s) store this prints its address instead, and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def prepare(uri: str, host: str, port: int) -> list[str]:
    """Create the store, announce the UI's address and print its link; return the command
    that serves the UI."""
    from pipeline.tracking.runs import announce_ui, experiments_url
    from pipeline.tracking.store import open_store

    store = open_store(uri)
    address = announce_ui(store.uri, host, port)
    print(f"MLflow UI: {experiments_url(address)}  (Ctrl-C stops it)", flush=True)
    return [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", store.uri,
            "--host", host, "--port", str(port), "--workers", "1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.commands.ui", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uri", default=None, help="the store's tracking URI (default: "
                        "MLFLOW_TRACKING_URI, else the project's mlflow.db)")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    from pipeline.errors import PipelineError
    from pipeline.tracking.runs import experiments_url
    from pipeline.tracking.store import store_uri

    uri = store_uri(args.uri or None)
    if uri.startswith(("http://", "https://")):
        print(f"error: the store {uri} is a tracking server, which serves its own UI: open "
              f"{experiments_url(uri)}; make ui serves a database store "
              "(STORE=sqlite:///<path>)", file=sys.stderr)
        return 1
    try:
        command = prepare(uri, args.host, args.port)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    # Scheduled jobs are a GenAI feature the training views never use; off, the UI starts in
    # half the time and memory.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    os.execve(command[0], command, env)
    return 0  # not reached: the process is the UI now


if __name__ == "__main__":
    sys.exit(main())
