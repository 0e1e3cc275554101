"""evaluate: every metric against sklearn.metrics; confusion matrix; prediction table;
per-class figures; the bounds every metric keeps."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn import metrics as skm

from pipeline.config.schema import LOWER_IS_BETTER, METRIC_NAMES
from stages import evaluate as evaluate_module
from stages.evaluate import ConfusionMatrix, evaluate

KEYS = {f"test_{name}" for name in METRIC_NAMES}


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
    _check_against_sklearn(result, np.column_stack([1 - p, p]), y, pred, ["0", "1"])


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
    assert list(frame.columns) == ["probability", "predicted_label", "actual_label",
                                   "probability_no", "probability_yes"]
    assert frame["probability"].tolist() == [0.3, 0.6, 0.5]
    assert frame["probability_yes"].tolist() == [0.3, 0.6, 0.5]
    assert frame["probability_no"].tolist() == [0.7, 0.4, 0.5]
    assert frame["predicted_label"].tolist() == ["no", "yes", "yes"]
    assert frame["actual_label"].tolist() == ["yes", "no", "yes"]


def test_multiclass_predictions_table_uses_predicted_class_probability() -> None:
    P = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    frame = evaluate(P, np.array([0, 1]), ["setosa", "versicolor", "virginica"]).predictions
    assert frame["probability"].tolist() == [0.7, 0.6]
    assert frame["predicted_label"].tolist() == ["setosa", "virginica"]
    per_class = frame[["probability_setosa", "probability_versicolor", "probability_virginica"]]
    assert per_class.to_numpy().tolist() == P.tolist()


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


# -- the metric set, MLflow's figures and the per-class table --------------------------------
def test_metric_names_are_the_schemas() -> None:
    """The stage cannot import the config: its names and the schema's must agree."""
    assert evaluate_module.METRIC_NAMES == METRIC_NAMES
    assert set(LOWER_IS_BETTER) <= set(METRIC_NAMES)
    for proba, classes in ((np.array([[0.2], [0.7]]), ["0", "1"]),
                           (np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]), ["a", "b", "c"])):
        result = evaluate(proba, np.array([0, 1]), classes)
        assert list(result.metrics) == [f"test_{name}" for name in METRIC_NAMES]


def test_prefix_names_the_split() -> None:
    result = evaluate(np.array([[0.2], [0.7]]), np.array([0, 1]), ["0", "1"], prefix="val")
    assert list(result.metrics) == [f"val_{name}" for name in METRIC_NAMES]
    assert result.prefix == "val"


def _expected_per_class(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """sklearn's figures, laid out as per_class_metrics.csv is."""
    labels = list(range(len(classes)))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    rows = [[name, p[i], r[i], f[i], s[i]] for i, name in enumerate(classes)]
    for average in ("macro", "weighted"):
        pa, ra, fa, _ = skm.precision_recall_fscore_support(y, pred, average=average,
                                                            zero_division=0)
        rows.append([f"{average} avg", pa, ra, fa, len(y)])
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"])


def _check_against_sklearn(result, P: np.ndarray, y: np.ndarray, pred: np.ndarray,
                           classes: list[str]) -> None:
    m = result.metrics
    k = len(classes)
    expected = _expected_per_class(y, pred, classes)
    pd.testing.assert_frame_equal(result.per_class, expected, check_dtype=False)
    for average in ("macro", "weighted"):
        pa, ra, fa, _ = skm.precision_recall_fscore_support(y, pred, average=average,
                                                            zero_division=0)
        assert m[f"test_precision_{average}"] == pytest.approx(pa)
        assert m[f"test_recall_{average}"] == pytest.approx(ra)
        assert m[f"test_f1_{average}"] == pytest.approx(fa)
    if k == 2:
        assert m["test_precision_recall_auc"] == pytest.approx(
            skm.average_precision_score(y, P[:, 1]))
        assert m["test_brier_score"] == pytest.approx(skm.brier_score_loss(y, P[:, 1]))
        assert m["test_brier_score"] == pytest.approx(m["test_mse"])
    else:
        if np.unique(y).size == k:  # sklearn refuses a class missing from y_true
            assert m["test_precision_recall_auc"] == pytest.approx(
                skm.average_precision_score(y, P, average="macro"))
        assert m["test_brier_score"] == pytest.approx(
            skm.brier_score_loss(y, P, labels=list(range(k))))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ties", [False, True])
def test_three_class_mlflow_figures_match_sklearn(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(6, 80))
    y = rng.integers(0, 3, n)
    y[:3] = [0, 1, 2]
    P = softmax(np.round(rng.normal(size=(n, 3)), 0) if ties else rng.normal(size=(n, 3)) * 2)
    result = evaluate(P, y, ["a", "b", "c"])
    _check_against_sklearn(result, P, y, P.argmax(axis=1), ["a", "b", "c"])


def test_a_class_never_seen_has_a_zero_row_and_is_left_out_of_the_macro_average() -> None:
    """sklearn's labels: the macro average is over the classes in y_true or predicted."""
    P = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]])
    y = np.array([0, 1, 1, 0])
    result = evaluate(P, y, ["a", "b", "c"])
    _check_against_sklearn(result, P, y, P.argmax(axis=1), ["a", "b", "c"])
    assert result.per_class.iloc[2].tolist() == ["c", 0.0, 0.0, 0.0, 0]


def _ece(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Expected calibration error, one bin at a time: (lo, hi] bins of width 0.1, the first
    one closed at 0 (sklearn.calibration.calibration_curve's uniform bins)."""
    total = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        inside = (confidence > lo) & (confidence <= hi) if b else (confidence <= hi)
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return total / confidence.size


@pytest.mark.parametrize("seed", range(6))
def test_calibration_error_is_the_binned_gap_on_the_predicted_class(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    n = int(rng.integers(20, 200))
    k = 2 + seed % 3
    y = rng.integers(0, k, n)
    P = softmax(rng.normal(size=(n, k)) * 3)
    result = evaluate(P, y, [str(c) for c in range(k)])
    pred = P.argmax(axis=1)
    confidence = P[np.arange(n), pred]
    assert result.metrics["test_calibration_error"] == pytest.approx(
        _ece(confidence, (pred == y).astype(float)))


def test_calibration_error_by_hand() -> None:
    """Bin (0.5, 0.6]: confidences 0.6, 0.6, one right -> |0.5 - 0.6|; bin (0.8, 0.9]:
    0.9, right -> |1 - 0.9|; bin (0.9, 1]: 0.95, 1.0, both right -> |1 - 0.975|."""
    p = np.array([0.6, 0.4, 0.9, 0.95, 1.0])
    y = np.array([1, 1, 1, 1, 1])
    result = evaluate(p[:, None], y, ["0", "1"])
    expected = (2 * 0.1 + 1 * 0.1 + 2 * 0.025) / 5
    assert result.metrics["test_calibration_error"] == pytest.approx(expected)


def test_a_perfect_confident_model() -> None:
    y = np.array([0, 1, 2, 1])
    result = evaluate(np.eye(3)[y], y, ["a", "b", "c"])
    m = result.metrics
    for name in ("accuracy", "precision_recall_auc", "roc_auc", "f1_macro", "f1_weighted"):
        assert m[f"test_{name}"] == 1.0, name
    for name in ("brier_score", "calibration_error", "mse"):
        assert m[f"test_{name}"] == 0.0, name


def test_single_class_in_y_true_gives_nan_average_precision() -> None:
    """As roc_auc: with one class in y_true a ranking has nothing to separate (all negative:
    no positive to recall; all positive: every ranking scores 1)."""
    for y in (np.array([1, 1]), np.array([0, 0])):
        m = evaluate(np.array([[0.2], [0.9]]), y, ["0", "1"]).metrics
        assert np.isnan(m["test_precision_recall_auc"]) and np.isnan(m["test_roc_auc"])
        finite = {k for k, v in m.items() if np.isfinite(v)}
        assert finite == KEYS - {"test_precision_recall_auc", "test_roc_auc"}
    m = evaluate(np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]), np.array([2, 2]),
                 ["a", "b", "c"]).metrics
    assert np.isnan(m["test_precision_recall_auc"]) and np.isnan(m["test_roc_auc"])


def test_multiclass_average_precision_is_over_the_classes_in_y_true() -> None:
    """sklearn refuses a class missing from y_true; the figure is then the mean over those
    present, as roc_auc's."""
    rng = np.random.default_rng(5)
    P = softmax(rng.normal(size=(30, 4)))
    y = np.arange(30) % 3  # class 3 never occurs
    m = evaluate(P, y, ["a", "b", "c", "d"]).metrics
    expected = np.mean([skm.average_precision_score(y == c, P[:, c]) for c in range(3)])
    assert m["test_precision_recall_auc"] == pytest.approx(expected)


# -- bounds ----------------------------------------------------------------------------------
UNIT = ("accuracy", "precision", "recall", "f1", "roc_auc", "precision_recall_auc",
        "calibration_error", "mse", "precision_macro", "recall_macro", "f1_macro",
        "precision_weighted", "recall_weighted", "f1_weighted")
MAY_BE_NAN = {"roc_auc", "precision_recall_auc"}


@st.composite
def _cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, float]:
    k = draw(st.integers(2, 5))
    n = draw(st.integers(1, 40))
    y = draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))
    probability = st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=False)
    if k == 2 and draw(st.booleans()):
        proba = draw(hnp.arrays(np.float64, (n, 1), elements=probability))
    else:
        raw = draw(hnp.arrays(np.float64, (n, k), elements=probability))
        raw[raw.sum(axis=1) == 0, 0] = 1.0
        proba = raw / raw.sum(axis=1, keepdims=True)
    threshold = draw(st.floats(0.0, 1.0)) if k == 2 else 0.5
    return proba, y, k, threshold


@settings(max_examples=300, deadline=None)
@given(_cases())
def test_bounded_metrics_stay_in_their_range(case: tuple[np.ndarray, np.ndarray, int, float]
                                            ) -> None:
    proba, y, k, threshold = case
    result = evaluate(proba, y, [f"c{i}" for i in range(k)], threshold=threshold)
    m = result.metrics
    for name in UNIT:
        value = m[f"test_{name}"]
        if name in MAY_BE_NAN and np.unique(y).size == 1:
            assert np.isnan(value), name
            continue
        assert 0.0 <= value <= 1.0, (name, value)
    # Brier: [0, 1] for two classes (sklearn halves it), [0, 2] beyond (sklearn's sum).
    assert 0.0 <= m["test_brier_score"] <= (1.0 if k == 2 else 2.0)
    assert m["test_log_loss"] >= 0.0
    table = result.per_class[["precision", "recall", "f1"]].to_numpy()
    assert ((table >= 0.0) & (table <= 1.0)).all()
    assert result.per_class["support"].tolist()[:k] == np.bincount(y, minlength=k).tolist()
