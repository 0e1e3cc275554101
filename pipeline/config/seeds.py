"""Per-consumer seeds derived from one root seed.

Each random consumer (data generation, split, initialisation, mini-batch shuffling)
gets its own stream from ``numpy.random.SeedSequence(root, spawn_key=(id,))``, where
``id`` is a fixed number derived from the consumer's name. Changing one stage's
settings therefore never shifts another stage's randomness, and a pinned seed
(RustNet's data seed 42, split seed 7) replaces just its own stream. The folds of
``split.folds`` are a child stream of the split's seed (:func:`fold_seed`): pinning
``split.seed`` pins them too, and the split itself does not change with them.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pipeline.config.schema import Config

CONSUMERS = ("data", "split", "init", "shuffle")


def _consumer_id(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def derive_seed(root: int, consumer: str) -> int:
    """A 32-bit seed for ``consumer``, independent of every other consumer's."""
    sequence = np.random.SeedSequence(root, spawn_key=(_consumer_id(consumer),))
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def resolve_seeds(root: int, pinned: dict[str, int | None]) -> dict[str, int]:
    """The seed each consumer uses: its pinned value, or one derived from ``root``."""
    return {
        name: pinned[name] if pinned.get(name) is not None else derive_seed(root, name)
        for name in CONSUMERS
    }  # type: ignore[misc]


def run_seeds(config: Config) -> dict[str, int]:
    """The seed each random consumer of a run uses: the config's pinned seeds, the others
    derived from its root ``seed``."""
    return resolve_seeds(config.seed, {
        "data": getattr(config.data, "seed", None), "split": config.split.seed,
        "init": config.model.seed, "shuffle": config.train.shuffle_seed,
    })


def fold_seed(split_seed: int) -> int:
    """The seed that deals the rows outside the test split into ``split.folds`` folds: a
    stream of its own derived from the split's seed (not one of the run's ``seeds.*``, so
    a run without folds records and checkpoints exactly what it did before folds existed).
    """
    return derive_seed(split_seed, "folds")
