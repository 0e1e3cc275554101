"""The MLflow store: opened once per process, every write retried or idempotent.

:func:`open_store` points MLflow at a tracking URI and checks that it answers. A new
sqlite file is created (its schema migrated) under a file lock, so any number of
runs, sweeps and ``make ui`` started at once on a new store all find it whole.

Every call goes through :meth:`Store.call`, which sorts failures into three kinds:

* transient (a locked sqlite file, a lost connection, a server error): retried with
  backoff for a bounded time;
* conflict (another process created the same experiment or dataset first): retried,
  so the second attempt finds what the first one made;
* permanent (a read-only or full store, a bad request): raised at once as a
  :class:`StoreError` whose one line names the store and the cause.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
# A server that is gone should be noticed in seconds, not after minutes of retries:
# the journal keeps the run meanwhile.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.datastore import file_lock
from pipeline.errors import TrackingError
from pipeline.paths import DEFAULT_STORE
from pipeline.tracking.record import HEARTBEAT_TAG

log = logging.getLogger("pipeline.tracking")
# urllib3 logs every HTTP retry, and MLflow every database error with its traceback; a
# failing store is reported once, in one line, by this package.
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
T = TypeVar("T")

TRANSIENT = ("database is locked", "database table is locked", "connection refused",
             "max retries exceeded", "failed to establish a new connection",
             "connection aborted", "connection reset", "remote end closed", "timed out",
             "temporarily unavailable", "bad gateway", "service unavailable",
             "gateway timeout", "too many 50", "server closed the connection",
             "could not connect to server", "connection to server")
CONFLICT = ("unique constraint failed", "duplicate key value", "already exists",
            "integrityerror")
# What a permanent failure means, for the one-line message.
CAUSES = (("readonly database", "the store is read-only"),
          ("read-only file system", "the store is on a read-only file system"),
          ("database or disk is full", "the disk is full"),
          ("no space left on device", "the disk is full"),
          ("unable to open database file", "the database file cannot be opened"),
          ("permission denied", "permission denied"))
UNREACHABLE = (("connection refused", "connection refused"),
               ("name or service not known", "unknown host"),
               ("timed out", "timed out"),
               ("remote end closed", "connection closed"),
               ("connection reset", "connection reset"),
               ("connection aborted", "connection aborted"),
               ("max retries exceeded", "no connection"),
               ("could not connect to server", "no connection"))
# Bugs, not store failures: never retried or reworded.
PROGRAMMING_ERRORS = (TypeError, AttributeError, KeyError, NameError, AssertionError)


class StoreError(TrackingError):
    """A store that cannot be reached or written; the message is one line."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def store_uri(uri: str | None) -> str:
    """The tracking URI: the given one, or the project's own sqlite store."""
    return uri if uri else f"sqlite:///{DEFAULT_STORE}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative paths from the cwd), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    return path if path.is_absolute() else Path.cwd() / path


def artifact_location(uri: str) -> str | None:
    """Artifacts of a sqlite store live beside its file (``<dir>/mlruns``), whatever the cwd.

    Other stores (a server) decide for themselves: None.
    """
    db = sqlite_path(uri)
    return (db.parent / "mlruns").as_uri() if db is not None else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def kind_of(error: BaseException) -> str:
    """"transient", "conflict" or "permanent" (see the module docstring)."""
    text = f"{type(error).__name__} {error}".lower()
    if any(cause in text for cause, _ in CAUSES):
        return "permanent"
    if any(mark in text for mark in TRANSIENT):
        return "transient"
    if any(mark in text for mark in CONFLICT):
        return "conflict"
    return "permanent"


def explain(error: BaseException) -> str:
    """A short cause: "the disk is full", "it does not answer (connection refused)", or
    the error's first line."""
    text = f"{type(error).__name__} {error}".lower()
    for mark, cause in CAUSES:
        if mark in text:
            # A file the store could not write (its artifact folder, say): name it.
            where = getattr(error, "filename", None)
            return f"{cause} ({where})" if where else cause
    for mark, cause in UNREACHABLE:
        if mark in text:
            return f"it does not answer ({cause})"
    return _first_line(error)


@contextlib.contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """Held while a process opens a sqlite store: its schema is created or upgraded by
    one process at a time. A no-op for other stores (a server migrates its own)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(Path(f"{db}-lock")):
        yield


def _repair_interrupted_migration(db: Path) -> None:
    """Drop the ``_alembic_tmp_*`` copy an interrupted migration left behind.

    SQLite's batch migrations copy a table into ``_alembic_tmp_<name>``, drop the original
    and rename the copy. A copy left beside its original is a half-made duplicate and
    blocks every later migration; a copy whose original is gone holds the data, and is
    renamed back.
    """
    if not db.exists():
        return
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master "
                                                "WHERE type = 'table'")}
        for tmp in sorted(t for t in tables if t.startswith("_alembic_tmp_")):
            original = tmp.removeprefix("_alembic_tmp_")
            if original in tables:
                con.execute(f'DROP TABLE "{tmp}"')
            else:
                con.execute(f'ALTER TABLE "{tmp}" RENAME TO "{original}"')
            log.warning("repaired the MLflow store %s: removed %s, left by an interrupted "
                        "schema migration", db, tmp)
        con.commit()


def _create_sqlite_store(db: Path) -> None:
    """Create a new store's schema in a temporary file beside ``db``, then rename it into
    place: a process killed mid-way leaves no half-made store (MLflow migrates a new file in
    place, ~70 steps, and a store cut short there stays broken).

    The migrated empty schema is kept in the project's cache (one file per MLflow version)
    and copied for the next new store: migrating takes seconds, a copy milliseconds.
    """
    for stale in db.parent.glob(f".{db.name}.*.new"):  # left by a killed creation
        stale.unlink(missing_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.new")
    template = schema_template()
    try:
        if not _copy_template(template, tmp):
            _migrate_new(tmp)
            _keep_template(tmp, template)
        os.replace(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


def schema_template() -> Path:
    """Where a new store's empty, migrated schema is kept for this MLflow version."""
    from pipeline.paths import PROJECT_ROOT

    return PROJECT_ROOT / ".cache" / "mlflow-schema" / f"mlflow-{mlflow.__version__}.db"


def _migrate_new(path: Path) -> None:
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def _copy_template(template: Path, target: Path) -> bool:
    """Copy ``template`` to ``target`` if it is an intact, empty store migrated to this
    MLflow's schema; a template that is not (cut short, or written by something else) is
    removed."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    if not template.is_file():
        return False
    try:
        shutil.copyfile(template, target)
        with contextlib.closing(sqlite3.connect(target)) as con:
            intact = con.execute("PRAGMA quick_check").fetchone() == ("ok",)
            versions = con.execute("SELECT version_num FROM alembic_version").fetchall()
            empty = not con.execute("SELECT 1 FROM experiments UNION ALL "
                                    "SELECT 1 FROM runs LIMIT 1").fetchall()
        if intact and empty and versions == [(_get_latest_schema_revision(),)]:
            return True
    except (OSError, sqlite3.Error):
        pass
    target.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        template.unlink()
    return False


def _keep_template(migrated: Path, template: Path) -> None:
    """Keep a copy of a freshly migrated store as ``template`` (best effort: a read-only
    project only loses the shortcut)."""
    part = template.with_name(f".{template.name}.{os.getpid()}.part")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated, part)
        os.replace(part, template)
    except OSError:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)


def _open_client(uri: str) -> MlflowClient:
    """A client whose store object exists (creating it migrates a new database)."""
    client = MlflowClient(tracking_uri=uri)
    client._tracking_client.store  # noqa: B018  (created now, under the caller's lock)
    return client


def _upgrade_schema(uri: str) -> None:
    """Bring a sqlite store's schema to this MLflow's head (what ``mlflow db upgrade`` does)."""
    from mlflow.store.db.utils import _upgrade_db, create_sqlalchemy_engine_with_retry

    engine = create_sqlalchemy_engine_with_retry(uri)
    try:
        _upgrade_db(engine)
    finally:
        engine.dispose()


class Store:
    """One tracking store, opened once per process. Only this package uses it."""

    def __init__(self, uri: str, client: MlflowClient) -> None:
        self.uri = uri
        self.client = client

    def call(self, what: str, action: Callable[[], T], *, budget_s: float = 60.0) -> T:
        """Run ``action``, retrying transient failures and conflicts for up to ``budget_s``
        seconds; raise :class:`StoreError` naming the store and ``what`` failed."""
        deadline = time.monotonic() + budget_s
        delay = 0.05
        while True:
            try:
                return action()
            except PROGRAMMING_ERRORS:
                raise
            except Exception as error:  # requests' and SQLAlchemy's errors arrive bare too
                failure, kind = error, kind_of(error)
            if kind == "permanent" or time.monotonic() + delay > deadline:
                raise StoreError(
                    f"tracking: could not {what} in the MLflow store at {self.uri}: "
                    f"{explain(failure)}", transient=kind != "permanent") from failure
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def end_run(store: Store, run_id: str, status: str, *, end_time: int | None = None,
            budget_s: float = 60.0) -> None:
    """Set a run's final status and drop its heartbeat tag, which only a live run has."""
    store.call(f"end the run {status}", lambda: store.client.set_terminated(
        run_id, status=status, end_time=end_time), budget_s=budget_s)
    drop_heartbeat(store, run_id)


def drop_heartbeat(store: Store, run_id: str) -> None:
    with contextlib.suppress(Exception):  # absent already, or a store that failed meanwhile
        store.client.delete_tag(run_id, HEARTBEAT_TAG)


def import_sql_store() -> None:
    """Import MLflow's SQL store ahead of time (a sweep's workers do, while they wait)."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def open_store(uri: str | None, *, budget_s: float = 30.0) -> Store:
    """Point MLflow at ``uri`` (default: the project's store) and check that it answers.

    A sqlite store is created, upgraded or repaired under a lock beside its file. Raises
    :class:`StoreError` naming the URI, before any work starts, when the store does not
    answer.
    """
    resolved = store_uri(uri)
    mlflow.set_tracking_uri(resolved)
    db = sqlite_path(resolved)
    try:
        with _schema_lock(resolved):
            if db is not None and (not db.exists() or db.stat().st_size == 0):
                _create_sqlite_store(db)
            elif db is not None:
                _repair_interrupted_migration(db)
            try:
                client = _open_client(resolved)
            except MlflowException as error:
                if db is None or "out-of-date database schema" not in str(error):
                    raise
                _upgrade_schema(resolved)  # an older MLflow's store, or a migration cut short
                client = _open_client(resolved)
    except (OSError, sqlite3.Error) as error:
        raise StoreError(f"tracking.uri: cannot open the MLflow store at {resolved}: "
                         f"{explain(error)}; point tracking.uri at a writable store") from None
    except MlflowException as error:
        raise StoreError(f"tracking.uri: cannot open the MLflow store at {resolved}: "
                         f"{explain(error)}; point tracking.uri at a working store") from None
    store = Store(resolved, client)
    try:
        store.call("answer", lambda: client.search_experiments(max_results=1),
                   budget_s=budget_s)
    except StoreError as error:
        cause = str(error).split(": ", 2)[-1]
        raise StoreError(
            f"tracking.uri: the MLflow store at {resolved} does not answer ({cause}); "
            "start it (make server) or point tracking.uri at a reachable store",
            transient=error.transient,
        ) from None
    return store


# MLflow 3.17's UI reads this to show an experiment as model training rather than GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"


def experiment_id(store: Store, name: str) -> str:
    """The id of experiment ``name``, created if missing (found if another process won)."""
    client = store.client
    existing = store.call("find the experiment", lambda: client.get_experiment_by_name(name))
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            raise StoreError(
                f"tracking.experiment: {name!r} is deleted in {store.uri}; "
                "restore it in the MLflow UI or pick another tracking.experiment"
            )
        return str(existing.experiment_id)

    def create() -> str:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        created = client.create_experiment(name, artifact_location=artifact_location(store.uri),
                                           tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
        return str(created)

    return store.call(f"create the experiment {name!r}", create)


if __name__ == "__main__":  # `make ui` and `make server`: create the store before the UI opens it
    import sys

    try:
        open_store(sys.argv[1] if len(sys.argv) > 1 else None)
    except StoreError as problem:
        print(problem, file=sys.stderr)
        sys.exit(1)
