"""Data parallelism inside a batch: its samples split into parts that run side by side.

The gradient of the batch's mean loss is a sum over its samples, so it is also a sum over
consecutive parts of the batch:

    dL/dθ = (1/n) Σ_s g_s = Σ_parts (1/n) Σ_{s in part} g_s

Each part runs the ordinary forward and backward passes (network.py) on its own Workspace,
scaled by the whole batch's 1/n, into its own gradient vector; the vectors are then added in
part order. NumPy releases the GIL inside BLAS calls and ufunc loops, so parts given to
different threads run in parallel. With BLAS held to one thread per part this beats one
multi-threaded BLAS call per layer on large batches: the element-wise passes (ReLU, masks,
the loss) run in parallel too, and each part's buffers are smaller, closer to the cache.

How a batch is split depends only on its size and the layer sizes, never on the number of
threads, so training gives the same bits on 1 thread as on 8 (the threads only decide which
part runs where). A batch too small to gain stays in one part: the plain single pass.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from .network import Network, ParameterLayout, Workspace

Array = npt.NDArray[np.floating]

# A part should carry at least this many matmul flops per gradient step: below it, the
# per-part Python overhead and thread hand-off outweigh what the parallel passes win (measured
# on a 2-core Xeon: W3's 1024-sample batches of (64, 256, 128, 1) split in 2, W2's 20k samples
# of (32, 64, 32, 1) in 4, RustNet's 800 samples of (2, 12, 1) not at all).
PART_FLOPS = 1e8
MIN_PART_SAMPLES = 64
# Each part has its own gradient vector: at most MAX_PARTS of them, and never more gradient
# copies than the batch's own activations take (a batch of 128 on a net with millions of
# weights stays whole; BLAS's own threads serve it well).
MAX_PARTS = 8


def part_count(n: int, layer_sizes: Sequence[int]) -> int:
    """How many parts a batch of n samples splits into: a power of two (so that 2, 4 or 8
    threads get equal shares) within the limits above; 1 for small batches."""
    n_params = ParameterLayout(layer_sizes).size  # every [W; b] entry
    # A sample costs each entry a multiply-add (2 flops) in the forward, weight-gradient and
    # delta products: 6 flops per parameter.
    parts = min(MAX_PARTS, int(n * 6 * n_params // PART_FLOPS), n // MIN_PART_SAMPLES,
                n * sum(layer_sizes[1:]) // n_params)
    return 1 << (parts.bit_length() - 1) if parts > 1 else 1


def part_bounds(n: int, layer_sizes: Sequence[int], parts: int | None = None) -> list[int]:
    """Boundaries [0, ..., n] of the ``parts`` (default: ``part_count``) consecutive, equal
    (to within one sample) parts of a batch of n samples; at most n parts."""
    parts = part_count(n, layer_sizes) if parts is None else max(1, min(parts, n))
    return [n * i // parts for i in range(parts + 1)]


class BatchParts:
    """One batch size's Workspaces, one per part, and the gradient vectors they fill.

    With a single part the Workspace is the plain one and writes straight into the caller's
    gradient vector. For a fixed data set (``inputs``, ``targets`` given: full batch,
    validation) the parts are column views of them; otherwise each part gathers its own rows.
    """

    def __init__(self, net: Network, layout: ParameterLayout, n: int,
                 inputs: Array | None = None, targets: Array | None = None,
                 parts: int | None = None) -> None:
        self.n = n
        bounds = part_bounds(n, net.layer_sizes, parts)
        self.ranges = list(itertools.pairwise(bounds))
        self.prefetched = False  # the parts already hold the next batch's rows
        if len(self.ranges) == 1:
            self.workspaces = [Workspace(net, n, inputs, targets)]
            self.grads: list[Array] = []
            self.grad_blocks: list[list[Array]] = []
            return
        self.workspaces = [
            Workspace(net, stop - start,
                      None if inputs is None else inputs[:, start:stop],
                      None if targets is None else targets[:, start:stop], mean_over=n)
            for start, stop in self.ranges]
        self.grads = [np.empty(layout.size, dtype=net.dtype) for _ in self.ranges]
        self.grad_blocks = [layout.blocks(g) for g in self.grads]

    @property
    def split(self) -> bool:
        """True when the batch runs in more than one part."""
        return len(self.ranges) > 1


class _Worker(threading.Thread):
    """A lane's thread: waits for a job, runs it, reports back, then runs the job's ``after``
    (work the caller does not wait for); a job of None ends it.

    Two plain locks do the hand-off (``go`` released by the caller, ``done`` by the worker):
    a fraction of what a ThreadPoolExecutor's futures cost per batch, which matters when a
    batch's parts take microseconds.
    An error in ``after`` is reported as the next job's error, that job not run.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)  # daemon: a forgotten close() never hangs exit
        self.go, self.done = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.job: Callable[[], Any] | None = None
        self.after: Callable[[], Any] | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self._after_error: BaseException | None = None
        self.start()

    def run(self) -> None:
        while True:
            self.go.acquire()
            job, after = self.job, self.after
            if job is None:
                return
            self.result, self.error = None, self._after_error
            self._after_error = None
            if self.error is None:
                try:
                    self.result = job()
                except BaseException as error:  # handed to the caller, which re-raises it
                    self.error = error
            self.done.release()
            if after is not None and self.error is None:
                try:
                    after()
                except BaseException as error:
                    self._after_error = error

    def submit(self, job: Callable[[], Any] | None,
               after: Callable[[], Any] | None = None) -> None:
        self.job, self.after = job, after
        self.go.release()

    def collect(self) -> Any:
        """The job's result (re-raising its error) once it has finished."""
        self.done.acquire()
        if self.error is not None:
            raise self.error
        return self.result


class Lanes:
    """Runs a batch's parts on ``threads`` threads: the calling thread plus workers.

    Part i runs on lane i % lanes; lane 0 is the caller, so one thread's worth of work never
    waits on a hand-off. ``run`` returns the parts' results in part order.
    """

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self._workers: list[_Worker] = []

    def run(self, task: Callable[[int], Any], n_parts: int,
            then: Callable[[int], Any] | None = None) -> list[Any]:
        """[task(0), ..., task(n_parts - 1)], spread over the lanes. ``then(i)`` runs on part
        i's lane after the lane's tasks; a worker runs it after reporting back, so it may
        still be running when ``run`` returns (and delays only that lane's next tasks)."""
        lanes = min(self.threads, n_parts)
        if lanes == 1:
            results = [task(i) for i in range(n_parts)]
            for i in range(n_parts) if then is not None else ():
                then(i)
            return results
        while len(self._workers) < lanes - 1:
            self._workers.append(_Worker(f"mlp-part-{len(self._workers) + 1}"))
        workers = self._workers[:lanes - 1]

        def lane(first: int) -> list[Any]:
            return [task(i) for i in range(first, n_parts, lanes)]

        errors = np.geterr()  # floating-point error handling is per thread: pass the caller's

        def worker_lane(first: int) -> list[Any]:
            with np.errstate(**errors):
                return lane(first)

        def lane_then(first: int) -> None:
            for i in range(first, n_parts, lanes) if then is not None else ():
                then(i)

        for first, worker in enumerate(workers, start=1):
            worker.submit(lambda first=first: worker_lane(first),
                          None if then is None else lambda first=first: lane_then(first))
        try:
            own = lane(0)
            lane_then(0)  # while the workers finish their tasks
        finally:  # even on an error, no thread may still be writing when run returns
            outcomes = []
            for worker in workers:
                try:
                    outcomes.append(worker.collect())
                except BaseException as error:
                    outcomes.append(error)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        results: list[Any] = [None] * n_parts
        for first, lane_results in enumerate([own, *outcomes]):
            results[first::lanes] = lane_results
        return results

    def close(self) -> None:
        """End the worker threads (idempotent)."""
        for worker in self._workers:
            worker.submit(None)
        for worker in self._workers:
            worker.join()
        self._workers = []


def plan_threads(requested: int | None, max_parts: int) -> tuple[int, int | None]:
    """(lanes, BLAS threads per lane or None to leave BLAS alone) for training whose largest
    batch has ``max_parts`` parts, given ``threads`` (None: BLAS's current limit)."""
    if requested is None and max_parts == 1:
        return 1, None  # nothing to split: BLAS keeps whatever limit the caller set
    threads = requested or blas_threads()
    lanes = min(threads, max_parts)
    if requested is None and lanes == 1:
        return 1, None
    return lanes, max(1, threads // lanes)


def blas_threads() -> int:
    """The thread count NumPy's BLAS is currently limited to (threadpoolctl), 1 if unknown."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # the core itself needs only NumPy: without threadpoolctl, one thread
        return 1
    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return max(1, min(counts)) if counts else 1


@contextmanager
def blas_limited(threads: int | None) -> Iterator[None]:
    """BLAS held to ``threads`` threads inside the block (None, or no threadpoolctl: left
    alone; the parts then still give the same result, only perhaps more slowly)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threads = None
    if threads is None:
        yield
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield
