"""``python -m pipeline.sync <output folder or journal> [--uri URI]``: send journals to a store.

A run records everything in ``journal.jsonl`` in its output folder before the store
sees it. This sends a journal (or every journal in a folder: a sweep's parent and
jobs) to the store it was recorded for, or to ``--uri``: runs whose store failed
mid-run, runs killed before they could finish sending, and ``tracking.mode=offline``
runs. Sending twice changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.errors import PipelineError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.sync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=Path, help="a run's or a sweep's output folder, or a "
                        "journal.jsonl")
    parser.add_argument("--uri", default=None, help="send to this tracking URI instead of the "
                        "journal's own store")
    args = parser.parse_args(argv)
    from pipeline.tracking.sync import sync

    try:
        results = sync(args.target.expanduser().absolute(), args.uri)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for sent in results:
        what = ("already sent" if sent.already else
                "sent to a new run" if sent.created else "sent")
        print(f"{what}: {sent.journal} -> run {sent.run_id} ({sent.status}) in {sent.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
