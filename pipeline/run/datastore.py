"""How stage outputs travel: Parquet files, and a content-addressed stage cache.

A dataset is one Parquet file (features, then the label as class indices) whose
schema metadata carries the label name and the class names. Every write goes to a
temporary file in the target folder and is renamed into place, so a reader (or a
concurrent sweep job) never sees half a file.

The cache keys each data stage by a sha256 of its name, its config and its inputs'
digests: a sweep over model or optimiser settings computes the data stages once.
(Writing whole files and the lock between processes: :mod:`pipeline.files`.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.files import atomic_path, file_lock
from stages.dataset import Dataset

# Bump when a stage's output for the same config changes, to invalidate old entries.
CACHE_VERSION = 1
_META_KEY = b"pipeline.dataset"

T = TypeVar("T")


def write_dataset(data: Dataset, path: Path) -> Path:
    """Write ``data`` as Parquet, with its label name and classes in the schema metadata."""
    table = pa.Table.from_pandas(data.to_frame(), preserve_index=False)
    meta = {"label_name": data.label_name, "classes": list(data.classes)}
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()}
    )
    with atomic_path(path, ".parquet") as tmp:
        pq.write_table(table, tmp)
    return path


def read_dataset(path: Path) -> Dataset:
    """Inverse of :func:`write_dataset`."""
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {})[_META_KEY])
    return Dataset.from_frame(table.to_pandas(), meta["label_name"], meta["classes"])


def cache_key(stage: str, config: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    """A content hash of a stage's name, config and input digests."""
    material = {"stage": stage, "config": config, "inputs": inputs, "version": CACHE_VERSION}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class StageCache:
    """A folder of stage outputs keyed by :func:`cache_key`; ``enabled=False`` bypasses it."""

    root: Path
    enabled: bool = True

    def fetch(
        self,
        stage: str,
        key: str,
        compute: Callable[[], T],
        save: Callable[[T, Path], None],
        load: Callable[[Path], T],
    ) -> tuple[T, bool]:
        """Return ``(value, hit)``: the cached value for ``key``, or a fresh one stored.

        ``save(value, folder)`` writes into a private temporary folder that is renamed
        to the entry's final name in one step, under a lock on the entry: a reader
        never sees a half-written entry and concurrent jobs compute it once.
        """
        if not self.enabled:
            return compute(), False
        entry = self.root / stage / key
        entry.parent.mkdir(parents=True, exist_ok=True)
        # One job computes an entry while concurrent jobs wait, then read it: a parallel
        # sweep computes its data stages once.
        with file_lock(entry.parent / f".{key}.lock"):
            if (entry / "COMPLETE").exists():
                try:
                    return load(entry), True
                except Exception:  # an unreadable entry is recomputed, never trusted
                    _remove_tree(entry)
            value = compute()
            staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=entry.parent))
            try:
                save(value, staging)
                (staging / "COMPLETE").write_text(key)
                if entry.exists():  # a broken entry (no COMPLETE marker) is in the way
                    _remove_tree(entry)
                os.rename(staging, entry)
            finally:
                if staging.exists():
                    _remove_tree(staging)
        return value, False


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
