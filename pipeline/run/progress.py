"""A one-line progress bar over epochs, for terminals only (not CI, pipes or sweep jobs)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO


class ProgressBar:
    """Redraws at most ~10 times a second: ``epoch 1200/3000 [#####.....] loss 0.1234``."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total, self.width = total, width
        self.stream = stream or sys.stderr
        self._last = 0.0
        self._closed = False

    def __call__(self, epoch: int, metrics: Mapping[str, float], model: Any) -> None:
        now = time.monotonic()
        if now - self._last < 0.1 and epoch < self.total:
            return
        self._last = now
        filled = int(self.width * epoch / max(self.total, 1))
        loss = metrics.get("train_loss", float("nan"))
        acc = metrics.get("train_accuracy", float("nan"))
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\repoch {epoch:>6}/{self.total} [{bar}] loss {loss:.4f} acc {acc:.3f}")
        self.stream.flush()
        if epoch >= self.total:  # end the line before anything else is printed
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
