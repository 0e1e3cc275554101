"""Shared fixtures: the real conf/ composed and shrunk, and a throw-away MLflow store."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from pipeline.config.paths import CONF_DIR, PROJECT_ROOT

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# A developer's `export MLFLOW_TRACKING_URI=...` names the store of every run that does not
# name one: the tests' runs (and the commands they start) must not write there.
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(autouse=True)
def _no_tracking_uri_from_earlier_tests() -> None:
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI (for subprocesses): a store an
    earlier test opened in this process must not become the next test's default."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)

# Small enough to run in well under a second, big enough to learn the RF task.
FAST = ["train.epochs=300", "train.checkpoint_every=100", "train.progress=false",
        "optimizer=adam", "optimizer.lr=0.02"]


@pytest.fixture
def compose_cfg() -> Iterator[Callable[..., DictConfig]]:
    """``compose_cfg("optimizer=adam", ...)``: the project's config with those overrides."""
    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            return compose(config_name="config", overrides=list(overrides))

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh sqlite MLflow store in tmp_path (artifacts land beside it)."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def isolated(tmp_path: Path, store: str) -> list[str]:
    """Overrides that send the store and the stage cache into tmp_path."""
    return [f"tracking.uri={store}", f"pipeline.cache_dir={tmp_path / 'cache'}"]


@pytest.fixture
def project_root() -> Path:
    return PROJECT_ROOT
