"""The MLflow store: opened once per process, every write retried or idempotent.

:func:`open_store` points MLflow at a tracking URI and checks that it answers. A sqlite
store path holds a regular sqlite file or nothing: anything else is refused, and a file
there is never replaced. A new store is made beside its path and linked into place under
a file lock, so it appears whole: any number of runs, sweeps, ``make ui`` and plain MLflow
clients started at once on a new store all find it whole. A whole store is opened without
the lock or any other write beside it (a read-only folder will do); one that another
process is still building is waited for.

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
import errno
import glob
import logging
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

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

from pipeline.config.paths import DEFAULT_STORE, PROJECT_ROOT
from pipeline.errors import TrackingError
from pipeline.files import file_lock
from pipeline.tracking.record import HEARTBEAT_TAG

log = logging.getLogger("pipeline.tracking")
# urllib3 logs every HTTP retry, and MLflow every database error with its traceback; a
# failing store is reported once, in one line, by this package.
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
# SQLAlchemy logs a traceback for a cursor that Ctrl-C left open; the store calls report.
logging.getLogger("sqlalchemy").setLevel(logging.CRITICAL)
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
    """The tracking URI: the given one, else ``MLFLOW_TRACKING_URI`` (how MLflow users point
    every tool at a store), else the project's own sqlite store."""
    if uri:
        return uri
    return os.environ.get("MLFLOW_TRACKING_URI", "").strip() or f"sqlite:///{DEFAULT_STORE}"


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
def _schema_lock(db: Path) -> Iterator[None]:
    """Held while a process creates, upgrades or repairs the sqlite store ``db``: one
    process at a time. Opening a whole store does not take it (nor write anything)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(Path(f"{db}-lock")):
        yield


SQLITE_HEADER = b"SQLite format 3\x00"
# A store path that is not whole is left alone until it has not changed for this long:
# another process (a plain MLflow client migrates a new file in place, with no lock) may
# be building it. Such a client wrote at least every 1.3 s here, beside 3 busy loops on
# 2 cores; a quiet store after this is one that nobody builds.
QUIET_S = 5.0
SETTLE_BUDGET_S = 120.0  # a store that changes all along without becoming whole: refused
POLL_S = 0.05
FILE_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"),
              (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
              (stat.S_ISSOCK, "socket"))
NEW_PATH = "point tracking.uri at an MLflow store, or at a new path to create one"


@dataclass(frozen=True)
class Schema:
    """A sqlite file's tables and alembic revision (None: no single revision row)."""

    tables: frozenset[str]
    revision: str | None

    @property
    def migration_copies(self) -> list[str]:
        return sorted(t for t in self.tables if t.startswith("_alembic_tmp_"))


def _refused(db: Path, what: str, fix: str = NEW_PATH) -> StoreError:
    return StoreError(f"tracking.uri: {db} {what}; {fix}")


def _store_file(db: Path) -> os.stat_result | None:
    """The status of the store's file (None: nothing there). Anything but a regular file
    (a directory, device, FIFO, socket, dangling link) never becomes a store: refused."""
    try:
        info = db.stat()
    except FileNotFoundError:
        if db.is_symlink():
            raise _refused(db, f"is a symbolic link to {os.readlink(db)}, which does not "
                               "exist") from None
        return None
    if stat.S_ISREG(info.st_mode):
        return info
    kind = next((name for test, name in FILE_KINDS if test(info.st_mode)), "special file")
    fix = (f"point tracking.uri at a file in it, e.g. sqlite:///{db / 'mlflow.db'}"
           if stat.S_ISDIR(info.st_mode) else NEW_PATH)
    raise _refused(db, f"is a {kind}, not an MLflow store", fix)


def _read_schema(db: Path) -> Schema:
    """The tables and revision of the regular file ``db``, read through a read-only
    connection: nothing is written in or beside it. A file that is not SQLite is refused."""
    with open(db, "rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if not header:
        return Schema(frozenset(), None)
    if header != SQLITE_HEADER:
        raise _refused(db, "is not an SQLite database, so not an MLflow store (left as it is)")
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True,
                                            timeout=10)) as con:
        tables = frozenset(row[0] for row in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"))
        rows = (con.execute("SELECT version_num FROM alembic_version").fetchall()
                if "alembic_version" in tables else [])
    return Schema(tables, rows[0][0] if len(rows) == 1 else None)


def _every_table(tables: frozenset[str]) -> bool:
    """Whether ``tables`` holds every table of this MLflow's models (what MLflow checks
    before it migrates a store itself)."""
    import mlflow.store.db.utils  # noqa: F401  (registers every model's table)
    from mlflow.store.db.base_sql_model import Base

    return set(Base.metadata.tables) <= tables


def _ready_to_open(db: Path) -> bool:
    """Whether MLflow may open ``db`` without the lock: a store with every table and no
    copy left by a migration. Opening it then migrates nothing; whether its revision is
    this MLflow's head, MLflow checks as it opens it."""
    info = _store_file(db)
    if info is None or info.st_size == 0:
        return False
    try:
        schema = _read_schema(db)
    except sqlite3.OperationalError as error:  # locked all along by a writer: a migration?
        if kind_of(error) != "transient":
            raise
        return False
    return _every_table(schema.tables) and not schema.migration_copies


def _stamp(db: Path, info: os.stat_result) -> tuple:
    """Changes whenever the store's file or its rollback journal or WAL does."""
    sides = []
    for suffix in ("-journal", "-wal"):
        try:
            side = os.stat(f"{db}{suffix}")
            sides.append((side.st_size, side.st_mtime_ns))
        except OSError:
            sides.append(None)
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, *sides


def _settle(db: Path, uri: str) -> None:
    """Under the schema lock: make ``db`` a whole store at this MLflow's head, or refuse.

    Absent, it is created (whole, in one step). Present but not whole, another process may
    be building it (see :data:`QUIET_S`): it is left alone until it is whole, or until it
    has not changed for ``QUIET_S``; then an MLflow store is repaired and upgraded, and
    anything else refused. A file that is there is never replaced.
    """
    from mlflow.store.db.utils import _get_latest_schema_revision

    head = _get_latest_schema_revision()
    deadline = time.monotonic() + SETTLE_BUDGET_S
    seen: tuple | None = None
    since = time.monotonic()
    while True:
        info = _store_file(db)
        if info is None:
            if _create_sqlite_store(db):
                return
            continue  # another process made the file first: it is waited for like any other
        try:
            schema: Schema | None = _read_schema(db)
        except sqlite3.OperationalError as error:  # a writer holds it: it is changing
            if kind_of(error) != "transient":
                raise
            schema = None
        if schema is not None and schema.revision == head and not schema.migration_copies:
            return
        now = time.monotonic()
        state = (_stamp(db, info), schema)
        if seen is None:
            log.info("the MLflow store %s is not whole: waiting until another process has "
                     "built it, or it stays unchanged for %.0f s", db, QUIET_S)
        if schema is None or state != seen:
            seen, since = state, now
        elif now - since >= QUIET_S:
            _complete(db, uri, schema)
            return
        if now > deadline:
            raise _refused(db, f"was still being changed by another process after "
                               f"{SETTLE_BUDGET_S:.0f} s without becoming a whole MLflow store",
                           "try again once that process is done")
        time.sleep(POLL_S)


def _complete(db: Path, uri: str, schema: Schema) -> None:
    """Bring a store that nobody else is building to this MLflow's head: an older MLflow's
    store, or one whose migration was cut short. A file that is no MLflow store is refused."""
    if not schema.tables:
        # Empty is what a client creating a store shows first (sqlite makes the file as it
        # connects, the schema follows), hence the wait. Nobody wrote one within QUIET_S:
        # it is a file someone else made, not ours to fill or to replace.
        raise _refused(db, f"is empty, and no process made it an MLflow store within "
                           f"{QUIET_S:.0f} s", "delete it to create a new store there, or "
                           "point tracking.uri elsewhere")
    if not {"experiments", "alembic_version"} & schema.tables:
        shown = ", ".join(sorted(schema.tables)[:5])
        raise _refused(db, f"is an SQLite database but not an MLflow store (tables: {shown})")
    _repair_interrupted_migration(db)
    _upgrade_schema(uri, from_scratch="alembic_version" not in schema.tables)


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


def _create_sqlite_store(db: Path) -> bool:
    """Create a new store's schema in a temporary file beside ``db``, then link it into
    place: the store appears whole or not at all (MLflow migrates a new file in place, ~70
    steps, and a store cut short there stays broken). False if a file appeared at ``db``
    meanwhile: it is never replaced (a plain MLflow client may be building it).

    The migrated empty schema is kept in the project's cache (one file per MLflow version)
    and copied for the next new store: migrating takes seconds, a copy milliseconds.
    """
    for stale in db.parent.glob(f".{glob.escape(db.name)}.*.new"):  # a killed creation's
        stale.unlink(missing_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.new")
    template = schema_template()
    try:
        if not _copy_template(template, tmp):
            _migrate_new(tmp)
            _keep_template(tmp, template)
        return _link_new(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


def _link_new(tmp: Path, db: Path) -> bool:
    """Give ``tmp`` the name ``db`` unless something has it: a hard link fails on an
    existing name, where a rename would replace it. False if ``db`` exists."""
    try:
        os.link(tmp, db)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        raise _refused(db, f"cannot be created safely: its file system does not link files "
                           f"({error.strerror})", "put the store on another file system"
                       ) from None
    return True


def schema_template() -> Path:
    """Where a new store's empty, migrated schema is kept for this MLflow version."""
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


def _upgrade_schema(uri: str, *, from_scratch: bool = False) -> None:
    """Bring a sqlite store's schema to this MLflow's head (what ``mlflow db upgrade`` does);
    ``from_scratch``: a store whose migrations never started (MLflow's first tables only,
    or some of them) is given the rest the way MLflow initialises a new one."""
    from mlflow.store.db.utils import (
        _initialize_tables,
        _upgrade_db,
        create_sqlalchemy_engine_with_retry,
    )

    engine = create_sqlalchemy_engine_with_retry(uri)
    try:
        (_initialize_tables if from_scratch else _upgrade_db)(engine)
    except PROGRAMMING_ERRORS:
        raise
    except Exception as error:  # alembic's and SQLAlchemy's own errors among them
        raise StoreError(f"tracking.uri: cannot upgrade the MLflow store at {uri} to MLflow "
                         f"{mlflow.__version__}'s schema: {explain(error)}; upgrade it with "
                         "`mlflow db upgrade <uri>` after a backup, or point tracking.uri "
                         "elsewhere") from None
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


def check_uri(uri: str) -> None:
    """Raise :class:`StoreError` (one line) for a tracking URI that does not parse (MLflow
    would fail deep inside with ``ValueError: Invalid IPv6 URL``)."""
    try:
        urlsplit(uri).port  # noqa: B018  (parsing the host and port is what can fail)
    except ValueError as error:
        raise StoreError(f"tracking.uri: {uri} is not a valid URI ({error}); write it as "
                         "http://host:port (an IPv6 host in brackets: http://[::1]:5000) "
                         "or sqlite:///<path>") from None


def _missing_driver(uri: str, error: ModuleNotFoundError) -> StoreError:
    """The one line for a store whose database driver is not installed."""
    module = error.name or str(error)
    scheme, _, rest = uri.partition("://")
    fix = f"install the Python package that provides {module}"
    if scheme == "postgresql":  # SQLAlchemy 2.1 reads it as psycopg 3; the project pins 2
        fix = (f"write postgresql+psycopg2://{rest} (psycopg2-binary, which the project "
               "installs) or install psycopg[binary]")
    return StoreError(f"tracking.uri: cannot open the MLflow store at {uri}: its database "
                      f"driver {module} is not installed; {fix}")


def _prepare_sqlite(db: Path, uri: str) -> None:
    """Make sure MLflow can open the sqlite store ``db`` without migrating anything: a
    whole store is opened as it is, without the lock; any other one is settled under it."""
    if not _ready_to_open(db):
        with _schema_lock(db):
            _settle(db, uri)


def open_store(uri: str | None, *, budget_s: float = 30.0) -> Store:
    """Point MLflow at ``uri`` (default: the project's store) and check that it answers.

    A whole sqlite store is opened as it is: nothing is written beside it (a read-only
    folder will do). A new one is created whole, under a lock beside its file; one that is
    not whole is waited for while another process builds it, then upgraded or repaired, or
    refused when it is no store. Raises :class:`StoreError` naming the URI, before any work
    starts, when the store cannot be opened or does not answer.
    """
    resolved = store_uri(uri)
    check_uri(resolved)
    mlflow.set_tracking_uri(resolved)
    db = sqlite_path(resolved)
    try:
        if db is not None:
            _prepare_sqlite(db, resolved)
        try:
            client = _open_client(resolved)
        except MlflowException as error:
            if db is None or "out-of-date database schema" not in str(error):
                raise
            # Every table, another revision: an older MLflow's store, or one a plain
            # MLflow client is still migrating.
            with _schema_lock(db):
                _settle(db, resolved)
            client = _open_client(resolved)
    except ModuleNotFoundError as error:
        raise _missing_driver(resolved, error) from None
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
