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
    parser.add_argument("target", type=Path, nargs="+", help="a run's or a sweep's output "
                        "folder, or a journal.jsonl (with --unsent: folders to look in)")
    parser.add_argument("--uri", default=None, help="send to this tracking URI instead of the "
                        "journal's own store")
    parser.add_argument("--unsent", action="store_true", help="send nothing: list the journals "
                        "never sent completely, exit 1 if there is any (make clean asks this)")
    args = parser.parse_args(argv)
    targets = [target.expanduser().absolute() for target in args.target]
    if args.unsent:
        return _report_unsent(targets)
    from pipeline.tracking.sync import sync

    try:
        results = [sent for target in targets for sent in sync(target, args.uri)]
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for sent in results:
        what = ("already sent" if sent.already else
                "sent to a new run" if sent.created else "sent")
        print(f"{what}: {sent.journal} -> run {sent.run_id} ({sent.status}) in {sent.uri}")
    return 0


def _report_unsent(targets: list[Path]) -> int:
    from pipeline.tracking.sync import unsent

    found = unsent(targets)
    for path in found:
        print(f"not sent: {path.parent}", file=sys.stderr)
    if found:
        print(f"{len(found)} run(s) exist only in their journals; send them first "
              "(make sync DIR=<folder>), or delete anyway with FORCE=1", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
