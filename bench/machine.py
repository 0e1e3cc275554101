"""The machine line and the thread limits every contender runs under."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata

import numpy as np

BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS")

def import_optional_libraries(keys: Sequence[str] = ("sklearn", "torch")) -> None:
    """Load scikit-learn (its SciPy BLAS and OpenMP) and torch if among ``keys`` and
    installed, so that :func:`limited_threads` reaches their thread pools too."""
    modules = {"sklearn": "sklearn.neural_network", "torch": "torch"}
    for key in keys:
        if key in modules:
            with contextlib.suppress(Exception):  # missing or broken: skipped later
                __import__(modules[key])


@contextlib.contextmanager
def limited_threads(threads: int) -> Iterator[None]:
    """Within the block, every loaded BLAS / OpenMP pool and torch's intra-op pool (if torch
    is loaded) use ``threads`` threads; the previous counts are restored afterwards."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")  # only if already loaded: importing it costs ~150 MiB
    torch_before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=threads):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(torch_before)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform's guess)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def blas_description() -> str:
    """NumPy's BLAS as threadpoolctl sees it: library, version, kernel, threads."""
    from threadpoolctl import threadpool_info

    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    chosen = next((p for p in pools if "numpy" in p["filepath"]), pools[0] if pools else None)
    if chosen is None:
        return "no BLAS found by threadpoolctl"
    return (f"{chosen['internal_api']} {chosen['version']} ({chosen.get('architecture', '?')}, "
            f"{chosen.get('threading_layer', '?')}, {chosen['num_threads']} threads)")


def thread_pools() -> str:
    """Every thread pool threadpoolctl finds, with its current thread count."""
    from threadpoolctl import threadpool_info

    return ", ".join(f"{os.path.basename(p['filepath'])}={p['num_threads']}"
                     for p in threadpool_info())


def library_versions() -> str:
    """numpy, scikit-learn and torch versions, read without importing them (or "absent")."""
    parts = [f"numpy {np.__version__}"]
    for name in ("scikit-learn", "torch"):
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} absent")
    return ", ".join(parts)


def torch_threads() -> str:
    """torch's intra-op thread count, or "-" when torch is not loaded."""
    torch = sys.modules.get("torch")
    return "-" if torch is None else str(torch.get_num_threads())


def load_average() -> float | None:
    """The 1-minute load average (runnable processes, all users), or None where unknown."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def load_lines(at_start: float | None, at_end: float | None) -> list[str]:
    """The load averages around the run, with a warning if others were using the CPUs."""
    if at_start is None or at_end is None:
        return []
    lines = [f"- Load average (1 min): {at_start:.2f} at the start, {at_end:.2f} at the end "
             "(the latter includes this run's own threads)"]
    if at_start > 1.0:
        lines.append("- **Warning: the machine was busy when this run started (load "
                     f"{at_start:.1f} on {os.cpu_count()} cores); timings are inflated and "
                     "noisy, rerun on a quiet machine before drawing conclusions.**")
    return lines


def machine_lines(threads: int) -> list[str]:
    """Markdown bullet lines describing the machine, libraries, BLAS and threads."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    env = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in BLAS_ENV)
    return [
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores ({usable} usable), "
        f"Python {platform.python_version()}, {library_versions()}",
        f"- BLAS: {blas_description()}",
        f"- Threads: every BLAS/OpenMP pool limited to {threads} (threadpoolctl), "
        f"torch.set_num_threads({threads}) -> {torch_threads()}; pools: {thread_pools()}",
        f"- Environment: {env}",
    ]
