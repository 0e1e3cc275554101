"""What a run records about its environment: the installed packages and their versions."""

from __future__ import annotations

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
