"""What decides a run's result, and its digest: every setting but the bookkeeping ones.

:data:`BOOKKEEPING` lists, once, the settings that change how a run is shown, recorded or
scheduled but not what it computes. :func:`config_digest` leaves them out; a sweep leaves
them out when it tells one configuration from another (resuming a sweep, grouping its
seeds): both read this one list, so they never disagree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config.schema import Config

# Dotted keys; a group's name stands for every key in it.
BOOKKEEPING = (
    "tracking",  # where and how the run is recorded
    "tags",  # free-form labels
    "sweep",  # what a sweep reports and how it runs, not what a job computes
    "pipeline.cache", "pipeline.cache_dir",  # where stage outputs are kept
    "pipeline.plugins",  # where code comes from; the names it adds are settings
    # Display and bookkeeping (a thread count can move the last bits; the run records it).
    "train.progress", "train.threads", "train.checkpoint_every",
)


# Settings added after runs were recorded, left out of the digest while they hold the
# value that means "as before" (no transforms, no folds), so a run's digest stays what it was.
OMITTED_AT_DEFAULT: dict[str, Any] = {"data.transforms": [], "split.folds": None}


def is_bookkeeping(key: str) -> bool:
    """Whether the dotted ``key`` (``train.threads``, ``tracking.uri``, ``tags.owner``) is
    a bookkeeping setting or inside one."""
    return any(key == name or key.startswith(name + ".") for name in BOOKKEEPING)


def config_dict(config: Config) -> dict[str, Any]:
    """The validated config as a tree of plain values."""
    return dataclasses.asdict(config)


def tree_digest(tree: Mapping[str, Any]) -> str:
    """sha256 of a config tree without its bookkeeping settings and the settings of
    :data:`OMITTED_AT_DEFAULT` at that value (a group left empty stays, as an empty mapping).
    """
    kept = _without(tree, "")
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def config_digest(config: Config) -> str:
    """sha256 of the settings that decide the result (:data:`BOOKKEEPING` left out)."""
    return tree_digest(config_dict(config))


def _without(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if is_bookkeeping(path) or (path in OMITTED_AT_DEFAULT
                                    and value == OMITTED_AT_DEFAULT[path]):
            continue
        kept[key] = _without(value, path + ".") if isinstance(value, Mapping) else value
    return kept
