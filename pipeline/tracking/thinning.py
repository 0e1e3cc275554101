"""Which epochs of a long run the store gets: at most ``max_points`` per metric.

The journal and the run's history artifact keep every epoch; the store keeps an
evenly spaced subset, always with the first and the last epoch run and the epoch
with the best validation loss, so a 200,000-epoch run costs the store as much as
a 5,000-epoch one. The choice depends only on the plan (first epoch, last planned
epoch, max_points) and on those two epochs, so the live run and a later
``pipeline.commands.sync`` of its journal send the same points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Thinning:
    """Keep ``first``, ``first + stride``, ... of the planned epochs ``first..last``."""

    first: int
    stride: int

    @classmethod
    def plan(cls, first: int, last: int, max_points: int | None) -> Thinning:
        """Every epoch when they fit (or ``max_points`` is None), else an even stride that
        leaves room for the last epoch run and the best one: (n - 1) // stride + 1 <=
        max_points - 2 points on the grid."""
        n = last - first + 1
        if max_points is None or n <= max_points:
            return cls(first, 1)
        return cls(first, math.ceil((n - 1) / (max_points - 3)))

    def keeps(self, step: int) -> bool:
        return (step - self.first) % self.stride == 0


EVERY_EPOCH = Thinning(first=1, stride=1)
