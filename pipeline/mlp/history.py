"""The record of one call to MLP.train."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class History:
    """Per-epoch metrics of one call to ``MLP.train``.

    epochs: the 1-based epoch numbers this call ran (k+1..N when resuming from epoch k).
    metrics: one list per name, one float per epoch, aligned with ``epochs``:

    * ``train_loss``: the optimised loss, binary or categorical cross-entropy, mean over
      samples (the weight-decay penalty is not included);
    * ``train_mse``: mean of (p - y)^2 over all outputs, with p the predicted probability and
      y the label (one-hot for softmax), as RustNet printed;
    * ``train_accuracy``: fraction of samples classified correctly: for sigmoid, the logit on
      the label's side of 0 (what predict() does at threshold 1/2, up to logits within ~1e-16
      of 0), for softmax the argmax;
    * with validation data: ``val_loss``, ``val_mse``, ``val_accuracy``, the same on it.

    When they are measured: the train metrics come from the forward passes the epoch already
    makes, so with full batch they are those of the parameters at the START of the epoch
    (before its update), and with mini-batches a mean over the epoch's batches, each taken
    before that batch's update. The validation metrics are those of the parameters at the END
    of the epoch, the ones early stopping restores.

    best_epoch: the epoch with the lowest val_loss (None without validation data).
    stopped_early: True if early stopping ended training before the epoch limit; the model
    was then set back to its state at the end of ``best_epoch``.
    """

    epochs: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None
    stopped_early: bool = False

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, name: str) -> list[float]:
        return self.metrics[name]

    def last(self) -> dict[str, float]:
        """The metrics of the last epoch run ({} if none)."""
        return {name: values[-1] for name, values in self.metrics.items() if values}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy."""
        return {"epochs": list(self.epochs),
                "metrics": {k: list(v) for k, v in self.metrics.items()},
                "best_epoch": self.best_epoch, "stopped_early": self.stopped_early}
