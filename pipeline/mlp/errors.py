"""Exceptions and warnings of the MLP core."""

from __future__ import annotations

import os
from typing import Any

from .history import History


class TrainingDiverged(RuntimeError, ArithmeticError):
    """The loss or a parameter became non-finite during training.

    ``epoch`` is the 1-based epoch in which it happened. The model is left as it was at the end
    of the previous epoch (parameters, optimiser state and shuffle state), so it can be saved or
    trained on with other settings. ``history`` holds the metrics of the epochs that completed.
    """

    def __init__(self, message: str, epoch: int | None = None,
                 history: History | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.history = history


class CheckpointError(ValueError):
    """A checkpoint cannot be read: missing, truncated, corrupt, wrong version or inconsistent.

    The message is one line naming the file and the problem; ``path`` and ``problem`` hold them.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"cannot load checkpoint {str(path)!r}: {problem}")
        self.path = str(path)
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:  # keep (path, problem) through pickling
        return (type(self), (self.path, self.problem))


class ConvergenceWarning(UserWarning):
    """Training stopped at its epoch limit while the monitored loss was still falling."""
