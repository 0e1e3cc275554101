"""The store side of completing a run's record (``python -m pipeline.commands.complete``).

:func:`open_run` finds one ended run in a store and returns a :class:`StoredRun`, which
reads the run's artifacts, logs its MLflow model or its plots afterwards and sets the
``model_logged`` / ``plots_logged`` tags. The run keeps its status and end time: MLflow
logs a model or artifacts to an ended run without reopening it, and :meth:`StoredRun.log_model`
and :meth:`StoredRun.log_plots` check that, restoring both if the store changed them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.tracking.model import log_model, logged_model_id, model_uri
from pipeline.tracking.store import Store, StoreError, open_store, sqlite_path, store_uri

CHECKPOINT = "checkpoints/final.json"
PLOTS_FOLDER = "plots"
CONFUSION_PNG = "confusion_matrix.png"
BUDGET_S = 60.0


def _missing(error: StoreError) -> bool:
    """Whether the store answered "no such run" (not a failure of the store)."""
    cause = error.__cause__
    if getattr(cause, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
        return True
    return cause is not None and "not found" in str(cause).lower()


class StoredRun:
    """One ended run of a store, as :func:`open_run` found it."""

    def __init__(self, store: Store, run_id: str, experiment_id: str, status: str,
                 end_time: int | None, tags: dict[str, str]) -> None:
        self.store, self.run_id, self.experiment_id = store, run_id, experiment_id
        self.status, self.end_time, self.tags = status, end_time, tags

    @property
    def uri(self) -> str:
        return self.store.uri

    # -- reading -----------------------------------------------------------------------
    def listing(self, folder: str = "") -> list[str]:
        """The artifact paths directly under ``folder`` (files and folders; [] if none)."""
        client = self.store.client
        items = self.store.call(f"list the artifacts of run {self.run_id}",
                                lambda: client.list_artifacts(self.run_id, folder or None),
                                budget_s=BUDGET_S)
        return [item.path for item in items]

    def has(self, path: str) -> bool:
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        return path in self.listing(parent)

    def download(self, path: str, folder: Path) -> Path | None:
        """The artifact ``path`` downloaded into ``folder``; None if the run has none."""
        if not self.has(path):
            return None
        client = self.store.client
        return Path(self.store.call(f"download {path} of run {self.run_id}",
                                    lambda: client.download_artifacts(self.run_id, path,
                                                                      str(folder)),
                                    budget_s=BUDGET_S))

    def model_id(self) -> str | None:
        """The id of the run's logged model, if it has one."""
        return logged_model_id(self.store, self.experiment_id, self.run_id, budget_s=BUDGET_S)

    def plot_files(self) -> list[str]:
        """The plot artifacts the run has (``confusion_matrix.png`` and ``plots/*.png``)."""
        root = self.listing()
        found = [path for path in root if path == CONFUSION_PNG]
        if PLOTS_FOLDER in root:
            found += [path for path in self.listing(PLOTS_FOLDER) if path.endswith(".png")]
        return sorted(found)

    # -- writing -----------------------------------------------------------------------
    def log_model(self, checkpoint: Path, features: Sequence[str],
                  classes: Sequence[str]) -> str:
        """Log the run's pyfunc model from ``checkpoint`` (as a full run does); its URI."""
        with self._status_kept():
            model_id = log_model(self.store, self.experiment_id, self.run_id, checkpoint,
                                 features, classes, budget_s=BUDGET_S)
        return model_uri(model_id)

    def log_plots(self, folder: Path) -> list[str]:
        """Log every file under ``folder`` at the same path in the run's artifacts (the
        artifact root); the paths logged."""
        client = self.store.client
        with self._status_kept():
            self.store.call(f"log the plots of run {self.run_id}",
                            lambda: client.log_artifacts(self.run_id, str(folder)),
                            budget_s=BUDGET_S)
        return sorted(path.relative_to(folder).as_posix()
                      for path in folder.rglob("*") if path.is_file())

    def mark(self, tag: str) -> None:
        """Set ``tag`` (model_logged or plots_logged) to "true"."""
        client = self.store.client
        self.store.call(f"tag run {self.run_id}",
                        lambda: client.set_tag(self.run_id, tag, "true"), budget_s=BUDGET_S)
        self.tags[tag] = "true"

    @contextlib.contextmanager
    def _status_kept(self) -> Iterator[None]:
        """The run's status and end time after the block as before it."""
        yield
        client = self.store.client
        info = self.store.call(f"read run {self.run_id}", lambda: client.get_run(self.run_id),
                               budget_s=BUDGET_S).info
        if (info.status, info.end_time) != (self.status, self.end_time):
            self.store.call(f"restore the status of run {self.run_id}",
                            lambda: client.set_terminated(self.run_id, status=self.status,
                                                          end_time=self.end_time),
                            budget_s=BUDGET_S)


def open_run(uri: str | None, run_id: str) -> StoredRun:
    """The run ``run_id`` of the store at ``uri`` (default: the project's).

    Raises :class:`PipelineError` (one line) when the store does not exist (a sqlite file is
    never created here) or does not answer, the run is not in it, deleted, or still running.
    """
    resolved = store_uri(uri)
    db = sqlite_path(resolved)
    if db is not None and not db.is_file():
        raise PipelineError(f"no MLflow store at {db}: point --uri (STORE=) at the store "
                            "that holds the run")
    store = open_store(resolved)
    client = store.client
    try:
        run = store.call("read the run", lambda: client.get_run(run_id), budget_s=BUDGET_S)
    except StoreError as error:
        if _missing(error):
            raise PipelineError(f"run {run_id} is not in the store {resolved}; copy the id "
                                "from the MLflow UI or point --uri (STORE=) at its store"
                                ) from None
        raise
    info = run.info
    if info.lifecycle_stage == "deleted":
        raise PipelineError(f"run {run_id} is deleted in {resolved}; restore it in the "
                            "MLflow UI first")
    if info.status == "RUNNING":
        raise PipelineError(f"run {run_id} is still RUNNING: complete it once it has ended "
                            "(make clean-runs ends a run whose process was killed)")
    return StoredRun(store, info.run_id, info.experiment_id, info.status, info.end_time,
                     dict(run.data.tags))

