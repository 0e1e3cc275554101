"""Each plot writes a non-empty PNG and leaves no open matplotlib figure."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from pipeline.run import plots

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _no_figures_left() -> None:
    yield
    assert len(plt.get_fignums()) == 0


def assert_png(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 100
    assert path.read_bytes()[:8] == PNG


def test_training_curves(tmp_path: Path) -> None:
    history = {
        "train_loss": [0.7, 0.5, 0.4], "val_loss": [0.72, 0.6, 0.55],
        "train_accuracy": [0.5, 0.7, 0.8], "train_mse": [0.25, 0.2, 0.15],
    }
    out = plots.plot_training_curves(history, tmp_path / "sub" / "curves.png")
    assert out == tmp_path / "sub" / "curves.png"
    assert_png(out)


def test_training_curves_with_missing_series(tmp_path: Path) -> None:
    assert_png(plots.plot_training_curves({"train_loss": [1.0]}, tmp_path / "c.png"))


def test_probability_vs_label(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    out = plots.plot_probability_vs_label(rng.uniform(size=40), rng.integers(0, 2, 40),
                                          tmp_path / "p.png")
    assert_png(out)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_roc_curve(tmp_path: Path, k: int) -> None:
    rng = np.random.default_rng(k)
    n_classes = max(k, 2)
    y = np.arange(30) % n_classes
    proba = rng.uniform(size=(30, k))
    classes = [f"c{i}" for i in range(n_classes)]
    assert_png(plots.plot_roc_curve(y, proba, classes, tmp_path / "roc.png"))


def test_roc_curve_single_class(tmp_path: Path) -> None:
    assert_png(plots.plot_roc_curve(np.ones(5, int), np.full((5, 1), 0.5), ["0", "1"],
                                    tmp_path / "roc.png"))


def test_confusion_matrix(tmp_path: Path) -> None:
    assert_png(plots.plot_confusion_matrix(["no", "yes"], [[5, 1], [2, 7]], tmp_path / "cm.png"))


def test_decision_boundary_binary_and_multiclass(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2)) * [10.0, 0.1] + [50.0, 0.0]
    y = (X[:, 1] > 0).astype(int)
    seen: list[np.ndarray] = []

    def binary(rows: np.ndarray) -> np.ndarray:
        seen.append(rows)
        return 1 / (1 + np.exp(-rows[:, 1:2] * 10))

    out = plots.plot_decision_boundary(binary, X, y, ("Frequency", "Amplitude"),
                                       tmp_path / "db.png", grid=30)
    assert_png(out)
    assert seen[0].shape == (900, 2) and seen[0][:, 0].min() < 50  # raw, un-normalised space

    def three(rows: np.ndarray) -> np.ndarray:
        z = np.column_stack([rows[:, 0] / 10, rows[:, 1] * 10, np.zeros(len(rows))])
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)

    assert_png(plots.plot_decision_boundary(three, X, y % 3, ("a", "b"), tmp_path / "d3.png",
                                            grid=20))


def test_decision_boundary_needs_two_features(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        plots.plot_decision_boundary(lambda r: r, np.zeros((3, 3)), np.zeros(3), ("a", "b"),
                                     tmp_path / "x.png")


@pytest.mark.parametrize("k", [1, 2, 3])
def test_precision_recall_curve(tmp_path: Path, k: int) -> None:
    rng = np.random.default_rng(k)
    n_classes = max(k, 2)
    y = np.arange(30) % n_classes
    proba = rng.uniform(size=(30, k))
    classes = [f"c{i}" for i in range(n_classes)]
    out = plots.plot_precision_recall_curve(y, proba, classes, tmp_path / "pr.png")
    assert out == tmp_path / "pr.png"
    assert_png(out)


def test_precision_recall_curve_legend_gives_the_average_precision(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """The legend's AP is the evaluate stage's figure (the same function)."""
    from stages.evaluate import average_precision

    seen: list[str] = []
    original = plots._save

    def keep_legend(fig, path):
        seen.extend(t.get_text() for ax in fig.axes if ax.get_legend()
                    for t in ax.get_legend().get_texts())
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", keep_legend)
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.1], [0.4], [0.35], [0.8]])
    plots.plot_precision_recall_curve(y, p, ["0", "1"], tmp_path / "pr.png")
    expected = average_precision(y == 1, p[:, 0])
    assert f"class 1 (AP {expected:.3f})" in seen
    assert any(text.startswith("chance") for text in seen)


def test_precision_recall_curve_single_class(tmp_path: Path) -> None:
    assert_png(plots.plot_precision_recall_curve(np.ones(5, int), np.full((5, 1), 0.5),
                                                 ["0", "1"], tmp_path / "pr.png"))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_calibration_curve(tmp_path: Path, k: int) -> None:
    rng = np.random.default_rng(k)
    n_classes = max(k, 2)
    y = np.arange(40) % n_classes
    proba = rng.uniform(size=(40, k))
    if k > 1:
        proba /= proba.sum(axis=1, keepdims=True)
    out = plots.plot_calibration_curve(y, proba, [f"c{i}" for i in range(n_classes)],
                                       tmp_path / "cal.png", brier=0.25, ece=0.1)
    assert out == tmp_path / "cal.png"
    assert_png(out)


def test_calibration_curve_title_and_nan(tmp_path: Path, monkeypatch) -> None:
    titles: list[str] = []
    original = plots._save

    def keep_title(fig, path):
        titles.extend(ax.get_title() for ax in fig.axes)
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", keep_title)
    y = np.array([0, 1, 1])
    plots.plot_calibration_curve(y, np.array([[0.2], [0.7], [1.0]]), ["0", "1"],
                                 tmp_path / "cal.png", brier=0.0467, ece=float("nan"))
    assert titles == ["Calibration curve (Brier 0.047, ECE nan)"]


def test_a_plot_that_fails_to_save_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    """A PNG is written whole or not at all (a half-written one would be logged)."""
    from matplotlib.figure import Figure

    def half_then_fail(self, fname, **kwargs) -> None:
        Path(fname).write_bytes(PNG)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
    with pytest.raises(OSError):
        plots.plot_confusion_matrix(["a", "b"], [[1, 0], [0, 1]], tmp_path / "cm.png")
    assert list(tmp_path.iterdir()) == []
