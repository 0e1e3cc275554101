"""Synthetic data: RustNet's noisy-sine "RF" dataset (its rf_data_gen.py)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from stages.dataset import DataError, Dataset


def _check_int(key: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DataError(
            f"data.{key}: {value!r} is not allowed; set data.{key} to an integer >= {minimum}"
        )
    return int(value)


def _check_float(key: str, value: object, minimum: float = -math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"data.{key}: {value!r} is not a number; set data.{key} to a number")
    if not math.isfinite(value) or value < minimum:
        allowed = "a finite number" if minimum == -math.inf else f"a finite number >= {minimum}"
        raise DataError(f"data.{key}: {value!r} is not allowed; set data.{key} to {allowed}")
    return float(value)


def generate_rf(
    *,
    n_samples: int = 1000,
    freq_start: float = 0.0,
    freq_end: float = 100.0,
    noise_std: float = 0.1,
    seed: int = 42,
) -> Dataset:
    """RustNet's RF data, value for value.

    Frequency = linspace(freq_start, freq_end, n_samples);
    Amplitude = sin(Frequency) + default_rng(seed).normal(0, noise_std, n_samples);
    Label = Amplitude > 0.
    Returns X: (n_samples, 2) ["Frequency", "Amplitude"], y: (n_samples,), classes ("0", "1").
    """
    n = _check_int("n_samples", n_samples, 2)
    start = _check_float("freq_start", freq_start)
    end = _check_float("freq_end", freq_end)
    std = _check_float("noise_std", noise_std, 0.0)
    rng = np.random.default_rng(_check_int("seed", seed, 0))
    frequency = np.linspace(start, end, n)
    amplitude = np.sin(frequency) + rng.normal(0, std, n)
    label = (amplitude > 0).astype(np.int64)
    return Dataset(
        X=np.column_stack([frequency, amplitude]),
        y=label,
        feature_names=("Frequency", "Amplitude"),
        label_name="Label",
        classes=("0", "1"),
    )
