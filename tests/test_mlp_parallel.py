"""Data-parallel batches (pipeline/mlp/parallel.py): how batches split, that a split batch has
the same gradient as the whole one, and that training gives the same bits on any thread count."""

from __future__ import annotations

import sys
import threading
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from pipeline.mlp import (
    ACTIVATIONS,
    MLP,
    TrainingDiverged,
    parallel,
    register_activation,
    training,
)
from pipeline.mlp.parallel import Lanes, part_bounds, part_count

pytestmark = pytest.mark.filterwarnings("ignore::pipeline.mlp.ConvergenceWarning")


@pytest.fixture(autouse=True, scope="module")
def softplus_parts():
    """A registered activation: it keeps its own Z buffer, unlike the built-ins."""
    register_activation("softplus_parts", lambda z: np.logaddexp(0.0, z),
                        lambda z, a: 1.0 / (1.0 + np.exp(-z)))
    yield
    ACTIVATIONS.pop("softplus_parts")


def binary(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, (X[:, 0] - 0.5 * X[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(int)


def blas_counts() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


@pytest.fixture
def small_parts(monkeypatch):
    """Let batches of a few hundred samples split, as the benchmark's large ones do."""
    monkeypatch.setattr(parallel, "PART_FLOPS", 2e4)
    monkeypatch.setattr(parallel, "MIN_PART_SAMPLES", 8)


# ---- how batches split ---------------------------------------------------------------------

@pytest.mark.parametrize(("n", "sizes", "parts"), [
    (800, (2, 12, 1), 1),  # RustNet's task: call-bound, never split
    (20_000, (32, 64, 32, 1), 4),  # the benchmark's W2, full batch
    (1024, (64, 256, 128, 1), 2),  # W3's mini-batches
    (320, (64, 256, 128, 1), 1),  # W3's last, smaller batch
    (10**6, (32, 64, 32, 1), parallel.MAX_PARTS),
    (128, (784, 2048, 2048, 10), 1),  # gradient copies would outweigh the activations
])
def test_part_count(n, sizes, parts):
    assert part_count(n, sizes) == parts


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
@pytest.mark.parametrize("parts", [1, 2, 3, 8, 2000])
def test_part_bounds_cover_the_batch_in_near_equal_consecutive_parts(n, parts):
    bounds = part_bounds(n, (3, 4, 1), parts)
    assert bounds[0] == 0 and bounds[-1] == n
    sizes = np.diff(bounds)
    assert len(sizes) == min(parts, n)
    assert sizes.min() >= 1 and sizes.max() - sizes.min() <= 1


def test_part_counts_are_powers_of_two_within_the_limits():
    for n in [64, 100, 1000, 5000, 20_000, 100_000]:
        for sizes in [(32, 64, 32, 1), (10, 100, 3), (64, 256, 128, 1)]:
            parts = part_count(n, sizes)
            assert parts & (parts - 1) == 0 and 1 <= parts <= parallel.MAX_PARTS
            assert parts == 1 or n // parts >= parallel.MIN_PART_SAMPLES


# ---- the gradient of a split batch ---------------------------------------------------------

@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
@pytest.mark.parametrize("gathered", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus_parts"])
def test_a_split_batch_has_the_whole_batchs_gradient(output, gathered, activation):
    X, y = binary(53, 4)
    if output == "softmax":
        y = y + (X[:, 2] > 0.5)
    model = MLP([4, 6, 5, 3 if output == "softmax" else 1], output=output, seed=3,
                hidden_activation=activation)
    indices = np.random.default_rng(1).permutation(53)[:41] if gathered else None
    whole = training.loss_and_gradients(model, X, y, indices=indices)
    for parts, threads in [(2, 1), (3, 2), (5, 3)]:
        split = training.loss_and_gradients(model, X, y, indices=indices, parts=parts,
                                            threads=threads)
        assert split[0] == pytest.approx(whole[0], rel=1e-13)
        for a, b in zip([*whole[1], *whole[2]], [*split[1], *split[2]], strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)


def test_a_split_batchs_gradient_does_not_depend_on_the_thread_count():
    X, y = binary(200, 5)
    model = MLP([5, 16, 8, 1], seed=0)
    one = training.loss_and_gradients(model, X, y, parts=4, threads=1)
    for threads in (2, 3, 4, 8):
        other = training.loss_and_gradients(model, X, y, parts=4, threads=threads)
        assert other[0] == one[0]
        for a, b in zip([*one[1], *one[2]], [*other[1], *other[2]], strict=True):
            np.testing.assert_array_equal(a, b)


# ---- training ------------------------------------------------------------------------------

@pytest.mark.parametrize(("batch_size", "dtype"), [(None, "float64"), (96, "float64"),
                                                   (96, "float32")])
def test_training_gives_the_same_bits_on_any_thread_count(small_parts, batch_size, dtype):
    X, y = binary(400, 6)
    X_val, y_val = binary(150, 6, seed=1)
    runs = []
    # threads given, or taken from the BLAS limit (as the pipeline's train.threads sets it)
    for threads, blas_limit in [(1, None), (2, None), (3, None), (None, 1), (None, 2)]:
        model = MLP([6, 24, 12, 1], seed=4, dtype=dtype)
        with threadpool_limits(limits=blas_limit, user_api="blas"):
            history = model.train(X, y, learning_rate=0.05, epochs=15, batch_size=batch_size,
                                  optimizer="adam", validation=(X_val, y_val), threads=threads)
        runs.append((model, history))
    assert part_count(400 if batch_size is None else batch_size, (6, 24, 12, 1)) > 1
    (first, first_history), *others = runs
    for model, history in others:
        for a, b in zip(first.weights + first.biases, model.weights + model.biases,
                        strict=True):
            np.testing.assert_array_equal(a, b)
        assert history.metrics == first_history.metrics


def test_split_training_learns_what_unsplit_training_learns(small_parts, monkeypatch):
    X, y = binary(400, 6)
    split = MLP([6, 24, 12, 1], seed=4)
    split_history = split.train(X, y, learning_rate=0.05, epochs=30, threads=2)
    monkeypatch.setattr(parallel, "PART_FLOPS", 1e30)  # never split
    whole = MLP([6, 24, 12, 1], seed=4)
    whole_history = whole.train(X, y, learning_rate=0.05, epochs=30, threads=2)
    np.testing.assert_allclose(split_history.metrics["train_loss"],
                               whole_history.metrics["train_loss"], rtol=1e-10)
    for a, b in zip(split.weights, whole.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_gathering_the_next_batch_ahead_changes_no_bit(small_parts, monkeypatch):
    X, y = binary(400, 6)
    ahead_steps = []
    step = training.Loop.step

    def spy(self, parts, index=None, next_index=None):
        ahead_steps.append(parts.split and next_index is not None)
        return step(self, parts, index, next_index)

    monkeypatch.setattr(training.Loop, "step", spy)
    ahead = MLP([6, 24, 12, 1], seed=2)
    ahead.train(X, y, learning_rate=0.05, epochs=4, batch_size=96, threads=2)
    assert sum(ahead_steps) == 4 * 3  # 5 batches an epoch: the first 3 gather their next
    monkeypatch.setattr(training.Loop, "step",
                        lambda self, parts, index=None, next_index=None: step(self, parts, index))
    plain = MLP([6, 24, 12, 1], seed=2)
    plain.train(X, y, learning_rate=0.05, epochs=4, batch_size=96, threads=2)
    for a, b in zip(ahead.weights + ahead.biases, plain.weights + plain.biases, strict=True):
        np.testing.assert_array_equal(a, b)


def test_blas_runs_one_thread_per_lane_while_training_and_is_restored(small_parts):
    X, y = binary(400, 6)
    seen: list[list[int]] = []
    names: list[set[str]] = []

    def look(epoch, metrics, model):
        seen.append(blas_counts())
        names.append({t.name for t in threading.enumerate()})

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_counts()
        MLP([6, 24, 12, 1], seed=0).train(X, y, learning_rate=0.05, epochs=3,
                                          callbacks=[look])
        assert blas_counts() == before
    assert all(counts == [1] * len(counts) for counts in seen)
    assert any(name.startswith("mlp-part") for found in names for name in found)
    assert not any(t.name.startswith("mlp-part") for t in threading.enumerate())


def test_threads_must_be_a_positive_int():
    X, y = binary(20, 3)
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="threads must be None or an int >= 1"):
            MLP([3, 4, 1]).train(X, y, learning_rate=0.1, epochs=1, threads=bad)


def test_divergence_in_a_split_batch_leaves_the_last_good_epochs_model(small_parts):
    X, y = binary(400, 6)
    X[377] = -1e200  # in the last part, on the worker's lane: epoch 2 overflows
    model = MLP([6, 24, 12, 1], seed=0)
    ends: list[list[np.ndarray]] = []

    def keep(epoch, metrics, model):
        ends.append([p.copy() for p in model.weights + model.biases])

    with pytest.raises(TrainingDiverged) as raised, warnings.catch_warnings():
        # overflow on the way is detected, not warned about: on the worker's lane too
        warnings.simplefilter("error", RuntimeWarning)
        model.train(X, y, learning_rate=0.05, epochs=5, threads=2, clip="none",
                    callbacks=[keep])
    assert raised.value.epoch == len(ends) + 1 >= 2
    for a, b in zip(ends[-1], model.weights + model.biases, strict=True):
        np.testing.assert_array_equal(a, b)


# ---- lanes -----------------------------------------------------------------------------------

def test_lanes_return_results_in_part_order_from_several_threads():
    lanes = Lanes(3)
    try:
        ran_on: dict[int, str] = {}

        def task(i: int) -> int:
            ran_on[i] = threading.current_thread().name
            return i * i

        assert lanes.run(task, 7) == [i * i for i in range(7)]
        assert len(set(ran_on.values())) == 3
        assert ran_on[0] == ran_on[3] == threading.current_thread().name  # lane 0: the caller
    finally:
        lanes.close()
        lanes.close()


def test_then_runs_on_each_parts_lane_after_its_task():
    lanes = Lanes(2)
    try:
        log: list[tuple[str, int, str]] = []

        def task(i: int) -> int:
            log.append(("task", i, threading.current_thread().name))
            return i

        def then(i: int) -> None:
            log.append(("then", i, threading.current_thread().name))

        assert lanes.run(task, 4, then) == [0, 1, 2, 3]
        lanes.run(lambda i: None, 2)  # a worker starts its next task only after its `then`
        caller = threading.current_thread().name
        mine = [entry for entry in log if entry[2] == caller]
        theirs = [entry for entry in log if entry[2] != caller]
        assert [entry[:2] for entry in mine] == [("task", 0), ("task", 2), ("then", 0),
                                                 ("then", 2)]
        assert [entry[:2] for entry in theirs] == [("task", 1), ("task", 3), ("then", 1),
                                                   ("then", 3)]
    finally:
        lanes.close()


def test_an_error_in_a_workers_then_is_raised_by_the_next_run():
    lanes = Lanes(2)
    ran: list[int] = []
    try:
        def then(i: int) -> None:
            if i == 1:
                raise RuntimeError("then failed")

        assert lanes.run(lambda i: i, 2, then) == [0, 1]
        with pytest.raises(RuntimeError, match="then failed"):
            lanes.run(ran.append, 2)
        assert ran == [0]  # the failed lane's task did not run
        assert lanes.run(lambda i: -i, 2) == [0, -1]  # and the lane works again
    finally:
        lanes.close()


def test_a_failing_part_raises_only_after_every_lane_has_finished():
    lanes = Lanes(2)
    finished = threading.Event()

    def task(i: int) -> None:
        if i == 0:
            raise RuntimeError("part 0 failed")
        finished.wait(0.2)
        finished.set()

    try:
        with pytest.raises(RuntimeError, match="part 0 failed"):
            lanes.run(task, 2)
        assert finished.is_set()
    finally:
        lanes.close()


def test_without_threadpoolctl_training_still_runs_and_gives_the_same_bits(small_parts,
                                                                          monkeypatch):
    X, y = binary(400, 6)
    with_ctl = MLP([6, 24, 12, 1], seed=5)
    with_ctl.train(X, y, learning_rate=0.05, epochs=5, threads=2)
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails: the core alone
    assert parallel.blas_threads() == 1
    for threads in (None, 2):
        alone = MLP([6, 24, 12, 1], seed=5)
        alone.train(X, y, learning_rate=0.05, epochs=5, threads=threads)
        for a, b in zip(with_ctl.weights, alone.weights, strict=True):
            np.testing.assert_array_equal(a, b)
