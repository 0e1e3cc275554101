"""Log the trained network as an MLflow pyfunc model (from code, no pickle)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import mlflow
import mlflow.utils.environment as mlflow_environment
import numpy as np
import pandas as pd
import yaml
from mlflow.models import Model, ModelSignature
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

from pipeline.config.paths import PROJECT_ROOT
from pipeline.errors import TrackingError
from pipeline.tracking.labels import integer_classes
from pipeline.tracking.record import CHILD_RECORD_TAG, MODEL_LOGGED_TAG
from pipeline.tracking.store import Store, StoreError, explain, sqlite_path
from stages.preprocess import Preprocessor
from stages.transforms import StoredMetadataError

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
MODEL_NAME = "model"
CHECKPOINT_ARTIFACT = "checkpoint"  # the model's artifact holding checkpoints/final.json
# The plugin modules the user names for a served model (``make serve PLUGINS=a,b``): the
# model's load_context imports these, and only these (see pyfunc_model.py).
PLUGINS_ENV = "PIPELINE_MODEL_PLUGINS"
T = TypeVar("T")


def plugin_names(text: str) -> list[str]:
    """The module names of a comma-separated list (``"a, b.c"`` -> ``["a", "b.c"]``)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _requirements() -> list[str]:
    """Explicit pins: MLflow would otherwise infer them (slow, and needs the index)."""
    import pyarrow

    return [
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"pyarrow=={pyarrow.__version__}",
    ]


_PIN_CHECK = "warn_dependency_requirement_mismatches"
_pin_check_lock = threading.Lock()


def _trust_own_pins() -> None:
    """Skip MLflow's check of a logged model's pins against this environment when the pins
    are :func:`_requirements`. Those are read from the installed packages themselves, so the
    check cannot find a mismatch; it first maps every file of every installed distribution
    to its package (~0.5 s, once per process, on the run's critical path). Any other
    requirement list is still checked by MLflow as before."""
    with _pin_check_lock:
        check = getattr(mlflow_environment, _PIN_CHECK, None)
        if check is None or getattr(check, "own_pins_trusted", False):
            return

        def checked_unless_own(requirements: list[str]) -> None:
            if set(requirements) <= set(_requirements()):
                return
            check(requirements)

        checked_unless_own.own_pins_trusted = True  # type: ignore[attr-defined]
        setattr(mlflow_environment, _PIN_CHECK, checked_unless_own)


def signature(classes: Sequence[str]) -> ModelSignature:
    """``predicted_label`` (long for integer classes, else string), ``probability`` and
    ``probability_<class>`` out. No input schema: the model checks its input itself
    (pyfunc_model.py), where MLflow's check would drop unknown columns silently and quote
    the whole request in its errors; the input example and the MLmodel's metadata
    (``feature_names``) name the columns."""
    label_type = "long" if integer_classes(classes) else "string"
    outputs = Schema(
        [ColSpec(label_type, "predicted_label"), ColSpec("double", "probability")]
        + [ColSpec("double", f"probability_{c}") for c in classes]
    )
    return ModelSignature(inputs=None, outputs=outputs)


def input_example(checkpoint: Path, features: Sequence[str]) -> pd.DataFrame | None:
    """A few raw rows for the model's ``input_example``: the training split's mean and one
    standard deviation either side, from the checkpoint's normaliser. None when the
    normaliser works on transformed features (``data.transforms``: its statistics are not
    raw values) or the checkpoint does not hold it as expected."""
    try:
        meta = json.loads(checkpoint.read_text()).get("metadata")
        normaliser = meta["normaliser"]
        mean = np.asarray(normaliser["mean"], dtype=np.float64)
        std = np.asarray(normaliser["std"], dtype=np.float64)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if meta.get("transforms") or mean.shape != (len(features),) or std.shape != mean.shape:
        return None
    rows = np.vstack([mean, mean - std, mean + std])
    if not np.isfinite(rows).all():
        return None
    rounded = [[float(f"{value:.4g}") for value in row] for row in rows]
    return pd.DataFrame(rounded, columns=list(features))


def logged_model_id(store: Store, experiment_id: str, run_id: str, *,
                    budget_s: float = 60.0) -> str | None:
    """The id of the run's finished ``model``, if it has one (a second sync logs none)."""
    models = store.call("look up the run's model", lambda: store.client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}'"), budget_s=budget_s)
    ready = [m for m in models if m.name == MODEL_NAME and str(m.status).endswith("READY")]
    return ready[0].model_id if ready else None


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """``logger``'s INFO lines held back (a run's output stays its own)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


def log_model(store: Store, experiment_id: str, run_id: str, checkpoint: Path,
              features: Sequence[str], classes: Sequence[str], *, budget_s: float = 60.0) -> str:
    """Log ``model/`` for the run: code, checkpoint, the core's source, pins; return its id.

    MLflow copies the run's step-0 metrics into the model by reading each metric's whole
    history, so the shipper logs the model before the epoch metrics when it can.
    """
    def log() -> str:
        # Model.log writes to the global store, and files the model under the global
        # experiment (not the run's) unless the environment names one.
        mlflow.set_tracking_uri(store.uri)
        _trust_own_pins()
        # "Validating input example against model signature": MLflow also predicts the
        # example through the model, as a served request would be.
        with warnings.catch_warnings(), _environment(MLFLOW_EXPERIMENT_ID=experiment_id), \
                _quiet("mlflow.pyfunc"):
            example = input_example(checkpoint, features)
            if example is None:  # the signature is explicit; MLflow still nags for one
                warnings.filterwarnings("ignore", message=".*input example.*")
            info = Model.log(
                artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=run_id,
                python_model=str(MODEL_CODE),
                artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
                code_paths=[str(PROJECT_ROOT / "pipeline"), str(PROJECT_ROOT / "stages")],
                pip_requirements=_requirements(),
                signature=signature(classes), input_example=example,
                metadata={"feature_names": list(features)},
            )
        return str(info.model_id)

    return store.call("log the model", log, budget_s=budget_s)


# -- serving (``make serve``) ------------------------------------------------------------
def model_uri(model_id: str) -> str:
    """The URI MLflow 3 resolves a logged model by: ``models:/<model_id>``."""
    return f"models:/{model_id}"


class ModelNotFound(TrackingError):
    """The run or model to serve is not in the store; the message is one line."""


def served_model(uri: str, *, run_id: str | None = None,
                 model: str | None = None) -> tuple[str, list[str] | None]:
    """The URI to serve (``models:/<model_id>`` for a run) and the model's input columns
    (None when its signature does not name them).

    ``model`` is served as given (``models:/<id>``, a registered ``models:/<name>/<version>``
    or a local folder); a ``models:/m-...`` id is checked. Raises :class:`ModelNotFound`
    (one line) for a missing store, run or model, or a run without a model.
    """
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ModelNotFound(f"no MLflow store at {db}: train a run first (make train), or "
                            "point STORE= at the store that holds it")
    store = Store(uri, MlflowClient(tracking_uri=uri))
    if model is None:
        if not run_id:
            raise ModelNotFound("name the model: RUN_ID=<run id> or MODEL=models:/<model id>")
        run = _lookup(store, "read the run", lambda: store.client.get_run(run_id),
                      f"RUN_ID={run_id}: no such run in {uri}")
        model_id = logged_model_id(store, run.info.experiment_id, run_id, budget_s=20.0)
        if model_id is None:
            raise ModelNotFound(
                f"RUN_ID={run_id}: the run ({run.info.status}) has no logged model (trained "
                "with tracking.log_model=false, offline and not synced, or stopped before "
                f"its model was logged); log it: make log-model RUN_ID={run_id}, or serve "
                "another run")
        model = model_uri(model_id)
    elif model.startswith("models:/m-"):
        model_id = model.removeprefix("models:/").split("/", 1)[0]
        _lookup(store, "read the model", lambda: store.client.get_logged_model(model_id),
                f"MODEL={model}: no such logged model in {uri}")
    mlflow.set_tracking_uri(uri)  # for reading the model's signature
    return model, _input_columns(model)


def _lookup(store: Store, what: str, action: Callable[[], T], missing: str) -> T:
    try:
        return store.call(what, action, budget_s=20.0)
    except StoreError as error:
        cause = error.__cause__
        if getattr(cause, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFound(missing) from None
        if cause is not None and "not found" in str(cause).lower():
            raise ModelNotFound(missing) from None
        raise ModelNotFound(f"cannot {what} in the MLflow store at {store.uri}: "
                            f"{explain(cause or error)}") from None


def _input_columns(model: str) -> list[str] | None:
    """The model's input column names: its signature's (models logged before the model
    checked its own input), else its metadata's ``feature_names``; None if neither."""
    try:
        info = mlflow.models.get_model_info(model)
    except Exception:  # an unusual URI: serving reports what is wrong with it
        return None
    inputs = info.signature.inputs if info.signature is not None else None
    names = inputs.input_names() if inputs is not None else None
    if names is None:
        names = (info.metadata or {}).get("feature_names")  # untrusted: checked below
    if not isinstance(names, list):
        return None
    return [str(n) for n in names] if names and all(isinstance(n, str) for n in names) else None


def model_preprocessor(model: str, description: Model) -> Preprocessor:
    """The preprocessor of the model to serve, restored as its load_context will restore it
    with the plugin modules imported so far: UnknownTransformError (one line naming the
    module) for a transform whose plugin is not imported, StoredMetadataError for a
    checkpoint that does not hold one. Reads the checkpoint's metadata only; nothing of the
    stored model is executed."""
    flavor = (description.flavors or {}).get("python_function", {})
    artifacts = flavor.get("artifacts") if isinstance(flavor, dict) else None
    entry = artifacts.get(CHECKPOINT_ARTIFACT) if isinstance(artifacts, dict) else None
    path = entry.get("path") if isinstance(entry, dict) else None
    if not isinstance(path, str) or not path:
        raise StoredMetadataError("its MLmodel names no checkpoint artifact (not a model of "
                                  "this pipeline)")
    with tempfile.TemporaryDirectory(prefix="pipeline-serve-") as tmp:
        repository = get_artifact_repository(model)  # any model URI, or a local folder
        local = repository.download_artifacts(path, tmp)
        try:
            text = Path(local).read_text()
            meta = json.loads(text).get("metadata")
        except (OSError, ValueError, AttributeError) as error:
            raise StoredMetadataError(f"its checkpoint cannot be read ({error})") from None
    return Preprocessor.from_metadata(meta, where="the model's checkpoint")


# A model's MLmodel description, as the commands name its type (MLflow stays in tracking).
ModelDescription = Model


class NotServable(Exception):
    """What keeps a model from being served, as a phrase for the one-line message."""


def local_folder(model: str) -> Path | None:
    """The folder ``MODEL=`` names, or None for a URI MLflow resolves (models:/, runs:/,
    http://, s3://, ...)."""
    parsed = urlparse(model)
    if parsed.scheme == "file":
        return Path(parsed.path)
    return None if parsed.scheme else Path(model).expanduser()


def first_line(error: BaseException) -> str:
    """An error's first line, at most 200 characters (its type's name if it has none)."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _describe_folder(folder: Path) -> Model:
    """The model description in ``folder``/MLmodel, read as MLflow reads it."""
    if not folder.exists():
        raise NotServable("no such folder")
    if not folder.is_dir():
        raise NotServable("a file, not a model folder")
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise NotServable("the folder has no MLmodel file, so it is not an MLflow model")
    bad = "its MLmodel file is not an MLflow model description"
    try:
        content = yaml.safe_load(mlmodel.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        raise NotServable(f"{bad} (not YAML)") from None
    except OSError as error:
        raise NotServable(f"cannot read its MLmodel file ({error.strerror or error})"
                          ) from None
    if not isinstance(content, dict):
        raise NotServable(f"{bad} (not a mapping)")
    try:
        return Model.from_dict(content)
    except Exception as error:  # a field of the wrong type, say
        raise NotServable(f"{bad} ({first_line(error)})") from None


def servable(model: str) -> Model:
    """The description of the model to serve; :class:`NotServable` when it cannot be read
    or has no python_function flavor (what ``mlflow models serve`` loads)."""
    folder = local_folder(model)
    if folder is not None:
        description = _describe_folder(folder)
    else:
        try:
            description = Model.load(model)  # its MLmodel, through the tracking store
        except Exception as error:  # MLflow's errors name the missing run or model
            raise NotServable(f"cannot read the model: {first_line(error)}") from None
    flavors = description.flavors or {}
    if "python_function" not in flavors:
        found = ", ".join(sorted(map(str, flavors))) or "none"
        raise NotServable(f"its model has no python_function flavor (it has: {found}), "
                          "which serving needs")
    return description


def signature_columns(description: Model) -> list[str] | None:
    """The column names of the model's input signature (None if it has none)."""
    inputs = description.signature.inputs if description.signature is not None else None
    names = inputs.input_names() if inputs is not None else None
    return [str(n) for n in names] if names and all(isinstance(n, str) for n in names) else None


def resolve_served(uri: str, *, run_id: str | None, model: str | None
                   ) -> tuple[str, Model, list[str] | None]:
    """The model to serve (a folder as given, else what :func:`served_model` names in the
    store at ``uri``), its description and its input columns. Raises
    :class:`ModelNotFound` or :class:`NotServable` (one line each)."""
    if model is not None and local_folder(model) is not None:
        description = servable(model)
        return model, description, signature_columns(description)
    target, columns = served_model(uri, run_id=run_id, model=model)  # points MLflow at uri
    description = servable(target)
    return target, description, columns if columns is not None else signature_columns(
        description)


def lean_without_model(uri: str, run_id: str) -> bool:
    """Whether run ``run_id`` is a lean sweep job's whose model was never logged (False
    when the store cannot say)."""
    try:
        tags = MlflowClient(tracking_uri=uri).get_run(run_id).data.tags
    except Exception:  # the store's own error was reported already
        return False
    return tags.get(CHILD_RECORD_TAG) == "lean" and tags.get(MODEL_LOGGED_TAG) != "true"
