"""evaluate: every metric against sklearn.metrics; confusion matrix; prediction table."""

import numpy as np
import pytest
from sklearn import metrics as skm

from stages.evaluate import ConfusionMatrix, evaluate

KEYS = {
    "test_accuracy", "test_precision", "test_recall", "test_f1",
    "test_roc_auc", "test_log_loss", "test_mse",
}


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ties", [False, True])
def test_binary_matches_sklearn(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    p = rng.uniform(0.01, 0.99, n)
    if ties:
        p = np.clip(np.round(p, 1), 0.1, 0.9)  # many tied scores, away from 0 and 1
    result = evaluate(p[:, None], y, ["0", "1"])
    pred = (p > 0.5).astype(int)
    m = result.metrics
    assert set(m) == KEYS
    assert m["test_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["test_precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
    assert m["test_recall"] == pytest.approx(skm.recall_score(y, pred, zero_division=0))
    assert m["test_f1"] == pytest.approx(skm.f1_score(y, pred, zero_division=0))
    assert m["test_roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["test_log_loss"] == pytest.approx(skm.log_loss(y, p, labels=[0, 1]))
    assert m["test_mse"] == pytest.approx(skm.mean_squared_error(y, p))
    assert result.confusion.matrix == skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ties", [False, True])
def test_three_classes_match_sklearn(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(6, 80))
    y = rng.integers(0, 3, n)
    y[:3] = [0, 1, 2]
    P = softmax(rng.normal(size=(n, 3)) * 2)
    if ties:
        P = softmax(np.round(rng.normal(size=(n, 3)), 0))
    result = evaluate(P, y, ["a", "b", "c"])
    pred = P.argmax(axis=1)
    m = result.metrics
    macro = {"average": "macro", "zero_division": 0}
    assert m["test_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["test_precision"] == pytest.approx(skm.precision_score(y, pred, **macro))
    assert m["test_recall"] == pytest.approx(skm.recall_score(y, pred, **macro))
    assert m["test_f1"] == pytest.approx(skm.f1_score(y, pred, **macro))
    assert m["test_roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, P, multi_class="ovr", average="macro")
    )
    assert m["test_log_loss"] == pytest.approx(skm.log_loss(y, P, labels=[0, 1, 2]))
    assert m["test_mse"] == pytest.approx(skm.mean_squared_error(np.eye(3)[y], P))
    assert result.confusion.matrix == skm.confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()


def test_no_predicted_positives_gives_zero_precision() -> None:
    y = np.array([0, 1, 1, 0])
    result = evaluate(np.array([[0.1], [0.2], [0.3], [0.4]]), y, ["0", "1"])
    assert result.metrics["test_precision"] == 0.0
    assert result.metrics["test_f1"] == 0.0
    assert result.metrics["test_roc_auc"] == pytest.approx(skm.roc_auc_score(y, [.1, .2, .3, .4]))


def test_single_class_in_y_true_gives_nan_auc() -> None:
    result = evaluate(np.array([[0.2], [0.9]]), np.array([1, 1]), ["0", "1"])
    assert np.isnan(result.metrics["test_roc_auc"])
    assert result.metrics["test_accuracy"] == 0.5


def test_log_loss_is_clipped() -> None:
    result = evaluate(np.array([[0.0], [1.0]]), np.array([1, 0]), ["0", "1"])
    assert result.metrics["test_log_loss"] == pytest.approx(-np.log(1e-15))


def test_threshold_and_predictions_table() -> None:
    result = evaluate(np.array([[0.3], [0.6], [0.5]]), np.array([1, 0, 1]), ["no", "yes"],
                      threshold=0.4)
    frame = result.predictions
    assert list(frame.columns) == ["probability", "predicted_label", "actual_label"]
    assert frame["probability"].tolist() == [0.3, 0.6, 0.5]
    assert frame["predicted_label"].tolist() == ["no", "yes", "yes"]
    assert frame["actual_label"].tolist() == ["yes", "no", "yes"]


def test_multiclass_predictions_table_uses_predicted_class_probability() -> None:
    P = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    frame = evaluate(P, np.array([0, 1]), ["setosa", "versicolor", "virginica"]).predictions
    assert frame["probability"].tolist() == [0.7, 0.6]
    assert frame["predicted_label"].tolist() == ["setosa", "virginica"]


def test_confusion_matrix_to_dict() -> None:
    result = evaluate(np.array([[0.9], [0.1], [0.8]]), np.array([1, 1, 0]), ["0", "1"])
    assert isinstance(result.confusion, ConfusionMatrix)
    assert result.confusion.to_dict() == {"labels": ["0", "1"], "matrix": [[0, 1], [1, 1]]}


@pytest.mark.parametrize(
    ("proba", "y", "classes"),
    [
        (np.zeros((3, 2)), np.array([0, 1, 2]), ["a", "b", "c"]),
        (np.zeros((2, 1)), np.array([0, 1, 1]), ["0", "1"]),
        (np.array([[0.5], [np.nan]]), np.array([0, 1]), ["0", "1"]),
        (np.array([[0.5], [0.2]]), np.array([0, 2]), ["0", "1"]),
        (np.array([[1.5], [0.2]]), np.array([0, 1]), ["0", "1"]),
    ],
)
def test_rejects_inconsistent_inputs(proba: np.ndarray, y: np.ndarray, classes: list) -> None:
    with pytest.raises(ValueError):
        evaluate(proba, y, classes)


def test_inputs_not_modified() -> None:
    P = np.array([[0.2], [0.7]])
    y = np.array([0, 1])
    evaluate(P, y, ["0", "1"])
    assert P.tolist() == [[0.2], [0.7]] and y.tolist() == [0, 1]
