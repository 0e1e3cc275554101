"""Synthetic data: RustNet's noisy-sine "RF" dataset (its rf_data_gen.py)."""

from __future__ import annotations

import numpy as np

from stages.dataset import Dataset


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
    The settings arrive checked (``pipeline.config.schema.RFDataConfig``): n_samples >= 2, finite
    frequencies, noise_std >= 0, seed >= 0.
    Returns X: (n_samples, 2) ["Frequency", "Amplitude"], y: (n_samples,), classes ("0", "1").
    """
    rng = np.random.default_rng(seed)
    frequency = np.linspace(freq_start, freq_end, n_samples)
    amplitude = np.sin(frequency) + rng.normal(0, noise_std, n_samples)
    label = (amplitude > 0).astype(np.int64)
    return Dataset(
        X=np.column_stack([frequency, amplitude]),
        y=label,
        feature_names=("Frequency", "Amplitude"),
        label_name="Label",
        classes=("0", "1"),
    )
