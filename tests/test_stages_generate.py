"""generate_rf reproduces RustNet's rf_data_gen.py value for value."""

import numpy as np

from stages.generate import generate_rf


def test_matches_rustnet_formula() -> None:
    # RustNet's rf_data_gen.py, written out.
    frequency = np.linspace(0, 100, 1000)
    amplitude = np.sin(frequency) + np.random.default_rng(42).normal(0, 0.1, 1000)
    label = (amplitude > 0).astype(int)

    data = generate_rf()
    np.testing.assert_array_equal(data.X[:, 0], frequency)
    np.testing.assert_array_equal(data.X[:, 1], amplitude)
    np.testing.assert_array_equal(data.y, label)
    assert data.feature_names == ("Frequency", "Amplitude")
    assert data.label_name == "Label" and data.classes == ("0", "1")


def test_arguments_are_used() -> None:
    data = generate_rf(n_samples=50, freq_start=1.0, freq_end=2.0, noise_std=0.0, seed=3)
    assert data.X.shape == (50, 2)
    np.testing.assert_array_equal(data.X[:, 1], np.sin(np.linspace(1.0, 2.0, 50)))
    assert generate_rf(seed=1).digest() != generate_rf(seed=2).digest()
    assert generate_rf(seed=1).digest() == generate_rf(seed=1).digest()
