"""k-fold cross-validation of a run's configuration (``split.folds=k``), before its refit.

With folds the split step keeps no validation split: its train part is every row outside
the test split. Those rows are dealt into k folds (:func:`stages.split.assign_folds`, from a
stream of the split's seed, so a rerun deals them again alike). For each fold, the
preprocessor is fitted on the other folds ONLY, a new model is built and trained with the
run's settings and seeds, and the held-out fold is scored through that preprocessor by the
evaluate stage. The runner then refits on all the rows outside the test split, as
scikit-learn's ``GridSearchCV(refit=True)`` does: only that model is checkpointed, scored on
the test split and logged. The folds' models record no epochs (the refit's curves are the
run's history); the console gets one line per fold.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

from pipeline.config.schema import Config, training_settings
from pipeline.config.seeds import fold_seed
from pipeline.mlp import ConvergenceWarning, TrainingDiverged, TrainSettings
from pipeline.run.data import TRANSFORMS_KEY
from pipeline.tracking.record import fold_metrics
from stages.dataset import DataError
from stages.evaluate import evaluate
from stages.preprocess import preprocess
from stages.split import Splits, assign_folds, fold_parts
from stages.train import build_model, train_model

log = logging.getLogger("pipeline")


def cross_validate(config: Config, seeds: Mapping[str, int], splits: Splits, *,
                   threads: int | None) -> dict[str, float]:
    """The folds' figures as the run records them (:func:`~pipeline.tracking.record.
    fold_metrics`: ``fold<i>_val_<name>``, ``val_<name>``, ``val_<name>_std``), from the
    rows of ``splits.train``; ``splits.test`` is never trained on. DataError (one line
    naming split.folds) when the rows cannot make ``config.split.folds`` folds."""
    k = config.split.folds
    assert k is not None and splits.val is None  # the schema leaves no val split with folds
    assignment = assign_folds(splits.train, k, stratify=config.split.stratify,
                              seed=fold_seed(seeds["split"]))
    settings = training_settings(config, shuffle_seed=seeds["shuffle"], resume=False,
                                 threads=threads)
    figures = []
    for fold in range(k):
        part, held = fold_parts(splits.train, assignment, fold)
        figures.append(_score_fold(config, seeds, Splits(train=part, test=splits.test, val=held),
                                   settings, f"{fold + 1}/{k}"))
    metrics = fold_metrics(figures)
    log.info("%d folds: val_accuracy %.4f ± %.4f (std); refitting on all %d rows outside the "
             "test split", k, metrics.get("val_accuracy", float("nan")),
             metrics.get("val_accuracy_std", float("nan")), splits.train.n_samples)
    return metrics


def _score_fold(config: Config, seeds: Mapping[str, int], fold: Splits,
                settings: TrainSettings, label: str) -> dict[str, float]:
    """Train on ``fold.train`` (the other folds) and score ``fold.val`` (the held-out one)
    through a preprocessor fitted on ``fold.train`` only; the ``val_*`` figures."""
    held = fold.val
    assert held is not None
    try:
        preprocessor, prepared = preprocess(fold, config.data.transforms, where=TRANSFORMS_KEY)
    except DataError as error:
        raise DataError(f"fold {label} of split.folds: {error}") from None
    model = build_model(
        prepared.train.n_features, prepared.train.n_classes,
        hidden_sizes=config.model.hidden_sizes, activation=config.model.activations,
        output=config.model.output, init=config.model.init, dtype=config.model.dtype,
        seed=seeds["init"],
    )
    with warnings.catch_warnings():
        # The refit, trained alike on more rows, says whether training stopped too soon.
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            train_model(model, prepared.train, None, settings)
        except TrainingDiverged as error:
            raise TrainingDiverged(f"fold {label}: {error}", epoch=error.epoch,
                                   history=error.history) from None
    proba = model.predict_proba(preprocessor.transform(held.X))
    figures = dict(evaluate(proba, held.y, held.classes, prefix="val").metrics)
    log.info("fold %s: val_accuracy %.4f (trained on %d rows, held out %d)", label,
             figures.get("val_accuracy", float("nan")), prepared.train.n_samples,
             held.n_samples)
    return figures

