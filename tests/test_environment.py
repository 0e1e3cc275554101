"""What a run records about its environment: the installed packages and their versions."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from pipeline import environment
from pipeline.environment import canonical_name, installed_packages


@pytest.fixture
def fresh_listing():
    installed_packages.cache_clear()
    yield installed_packages
    installed_packages.cache_clear()


def test_listing_matches_every_distributions_metadata(fresh_listing) -> None:
    expected = {canonical_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    assert fresh_listing() == dict(sorted(expected.items()))
    assert fresh_listing()["numpy"] == metadata.version("numpy")


@pytest.mark.parametrize(("name", "canonical"), [
    ("PyYAML", "pyyaml"), ("ruamel.yaml", "ruamel-yaml"), ("hydra_core", "hydra-core"),
    ("zope__interface", "zope-interface"), ("mlflow", "mlflow"),
])
def test_canonical_names(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical


def test_dist_info_egg_info_and_shadowing(fresh_listing, tmp_path, monkeypatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "Foo_Bar-1.2.3.dist-info").mkdir(parents=True)
    (first / "legacy.egg-info").mkdir()
    (first / "legacy.egg-info" / "PKG-INFO").write_text(
        "Metadata-Version: 1.0\nName: Legacy.Pkg\nVersion: 0.9\n")
    (first / "not_a_package").mkdir()
    (second / "foo_bar-9.0.dist-info").mkdir(parents=True)  # shadowed by the first
    monkeypatch.setattr(sys, "path", [str(first), str(tmp_path / "missing"), str(second)])
    assert fresh_listing() == {"foo-bar": "1.2.3", "legacy-pkg": "0.9"}


def test_environment_json_lists_the_packages(tmp_path: Path) -> None:
    packages = environment.installed_packages()
    assert packages == dict(sorted(packages.items()))
    assert {"mlflow", "hydra-core", "numpy", "pandas"} <= set(packages)


_DESCRIBE_BLAS = """
import ctypes, glob, importlib.util, json, os, sys
if sys.argv[1] == "scipy-first":
    # SciPy's own OpenBLAS loaded before NumPy's: threadpool_info() lists it first, as it
    # does in a process that imported SciPy's extensions before NumPy's BLAS was loaded.
    site = os.path.dirname(os.path.dirname(importlib.util.find_spec("scipy").origin))
    for path in sorted(glob.glob(os.path.join(site, "scipy.libs", "*blas*"))):
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    import scipy.linalg  # noqa: F401
from pipeline.environment import blas_info
print(json.dumps(blas_info()))
"""


def _blas_in_new_process(mode: str) -> dict[str, str]:
    done = subprocess.run([sys.executable, "-c", _DESCRIBE_BLAS, mode], capture_output=True,
                          text=True, check=True, cwd=Path(environment.__file__).parents[1])
    return json.loads(done.stdout)


def test_blas_is_numpys_whatever_was_loaded_first() -> None:
    """A rerun on the same venv must describe the same BLAS (issue 27, point 2)."""
    import numpy

    numpy_only = _blas_in_new_process("numpy-only")
    assert numpy_only == _blas_in_new_process("scipy-first")
    assert numpy_only == environment.blas_info()  # this process imported SciPy too
    built = numpy.__config__.CONFIG["Build Dependencies"]["blas"]["version"]
    assert numpy_only["blas"].startswith(f"openblas {built} ")


def test_blas_pool_choice_prefers_numpys_own_library(tmp_path: Path) -> None:
    numpy_dir = tmp_path / "site" / "numpy"
    scipy_pool = {"user_api": "blas", "internal_api": "openblas", "version": "0.3.30",
                  "filepath": str(tmp_path / "site" / "scipy.libs" / "libopenblas.so")}
    wheel_pool = {**scipy_pool, "version": "0.3.31",
                  "filepath": str(tmp_path / "site" / "numpy.libs" / "libopenblas64_.so")}
    dylib_pool = {**scipy_pool, "version": "0.3.29",
                  "filepath": str(numpy_dir / ".dylibs" / "libopenblas.dylib")}
    system_pool = {**scipy_pool, "version": "0.3.21", "filepath": "/usr/lib/libopenblas.so"}
    choose = environment.numpy_blas_pool
    assert choose([scipy_pool, wheel_pool], numpy_dir, None) == wheel_pool
    assert choose([scipy_pool, dylib_pool], numpy_dir, None) == dylib_pool
    # A NumPy linked to a system BLAS: the one whose version NumPy was built against.
    assert choose([scipy_pool, system_pool], numpy_dir, "0.3.21") == system_pool
    assert choose([scipy_pool, system_pool], numpy_dir, None) == scipy_pool
    assert choose([], numpy_dir, None) is None
