"""The MLflow Model Registry: registered versions, their aliases, and the promotion lock.

MLflow has no compare-and-set for aliases (setting one is last-writer-wins), so a promotion
takes a lock made of the registry's own unique constraint: a registered model named
``<name>.promotion-lock``. Creating it fails with RESOURCE_ALREADY_EXISTS while another
promotion holds it, on every backend (sqlite, a server on sqlite or PostgreSQL). It is held
from reading the alias's current holder until the alias is set, and deleted afterwards; its
``acquired_at`` tag lets a lock left by a killed process be taken over once it is older than
:data:`LOCK_STALE_S`.

Nothing read back from the registry is trusted: tags are plain strings, checked before use.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.errors import TrackingError
from pipeline.tracking.store import explain

LOCK_SUFFIX = ".promotion-lock"
LOCK_STALE_S = 300.0  # a lock older than this was left by a process that died
LOCK_WAIT_S = 120.0  # how long a promotion waits for another to finish
LOCK_POLL_S = 0.25
# Version tags: what ties a version to its run, and what its promotion decided.
RUN_ID_TAG = "run_id"
FORCED_TAG = "promotion.forced"
GATE_TAG = "promotion.gate"  # one line: what the gate found
PREVIOUS_TAG = "promotion.previous"  # the version that held the alias when the gate ran
_NAME = re.compile(r"[A-Za-z0-9][\w.\- ]{0,255}")
_ALIAS = re.compile(r"[A-Za-z_][\w\-]{0,254}")


class RegistryError(TrackingError):
    """A registry operation that failed; the message is one line."""


@dataclass(frozen=True)
class RegistryRef:
    """A ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` URI, parsed."""

    name: str
    alias: str | None = None
    version: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else \
            f"models:/{self.name}/{self.version}"


def parse_registry_uri(uri: str) -> RegistryRef | None:
    """The registered name and alias or version a ``models:/`` URI names; None for anything
    else (a ``models:/m-<id>`` logged model, a run id, a folder)."""
    if not uri.startswith("models:/"):
        return None
    rest = uri.removeprefix("models:/").rstrip("/")
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        return RegistryRef(name, alias=alias) if name and alias else None
    name, _, version = rest.rpartition("/")
    if name and version.isdigit():
        return RegistryRef(name, version=version)
    return None


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be a registered model's name here, or None."""
    if not _NAME.fullmatch(name) or name.endswith(LOCK_SUFFIX):
        return (f"{name!r} is not a usable registered model name (letters, digits, '_', '-', "
                f"'.', spaces; not ending in {LOCK_SUFFIX!r})")
    return None


def check_alias(alias: str) -> str | None:
    """Why ``alias`` cannot be an alias, or None (MLflow reserves ``latest`` and ``v<n>``)."""
    if not _ALIAS.fullmatch(alias) or alias.lower() == "latest" or \
            re.fullmatch(r"[vV]\d+", alias):
        return (f"{alias!r} is not a usable alias (a letter or '_' first, then letters, "
                "digits, '_' or '-'; not 'latest' or 'v<number>')")
    return None


def _code(error: BaseException) -> str | None:
    return getattr(error, "error_code", None)


def _call(what: str, action: Callable[[], object]) -> object:
    try:
        return action()
    except MlflowException as error:
        raise RegistryError(f"cannot {what}: {explain(error)}") from None
    except OSError as error:  # a server that is gone
        raise RegistryError(f"cannot {what}: {explain(error)}") from None


def alias_holder(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version of ``name`` holding ``alias``; None when the model or alias does not
    exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if _code(error) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise RegistryError(f"cannot read {name}@{alias}: {explain(error)}") from None
    except OSError as error:
        raise RegistryError(f"cannot read {name}@{alias}: {explain(error)}") from None


def resolve(client: MlflowClient, ref: RegistryRef) -> ModelVersion:
    """The version a registry URI names; RegistryError (one line) when there is none."""
    try:
        if ref.alias is not None:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        return client.get_model_version(ref.name, str(ref.version))
    except MlflowException as error:
        if _code(error) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RegistryError(f"{ref.uri}: no such registered model version (make promote "
                                "RUN_ID=<id> registers one)") from None
        raise RegistryError(f"cannot read {ref.uri}: {explain(error)}") from None
    except OSError as error:
        raise RegistryError(f"cannot read {ref.uri}: {explain(error)}") from None


def ensure_registered_model(client: MlflowClient, name: str, description: str) -> None:
    """Create the registered model ``name`` with ``description``, or give an existing one
    without a description this one."""
    try:
        client.create_registered_model(name, description=description)
        return
    except MlflowException as error:
        if _code(error) != "RESOURCE_ALREADY_EXISTS":
            raise RegistryError(f"cannot create registered model {name!r}: {explain(error)}"
                                ) from None
    except OSError as error:
        raise RegistryError(f"cannot create registered model {name!r}: {explain(error)}"
                            ) from None
    found = _call(f"read registered model {name!r}", lambda: client.get_registered_model(name))
    if not getattr(found, "description", None):
        _call(f"describe registered model {name!r}",
              lambda: client.update_registered_model(name, description=description))


def create_version(client: MlflowClient, name: str, source: str, run_id: str,
                   tags: dict[str, str]) -> ModelVersion:
    """A new version of ``name`` from ``source`` (``models:/<model id>``) with ``tags``, set
    in the same request as the version, so no version exists without them."""
    model_id = source.removeprefix("models:/") if source.startswith("models:/m-") else None
    version = _call(f"register a version of {name!r}",
                    lambda: client.create_model_version(name, source, run_id=run_id,
                                                        tags=tags, model_id=model_id,
                                                        await_creation_for=60))
    assert isinstance(version, ModelVersion)
    return version


def tag_version(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    """Set ``tags`` on version ``version`` of ``name``."""
    for key, value in tags.items():
        _call(f"tag version {version} of {name!r}",
              lambda k=key, v=value: client.set_model_version_tag(name, version, k, v))


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    _call(f"point {name}@{alias} at version {version}",
          lambda: client.set_registered_model_alias(name, alias, version))


# -- the promotion lock ----------------------------------------------------------------------
class LockBusy(RegistryError):
    """Another promotion held the lock for longer than the wait."""


def _lock_age(client: MlflowClient, lock: str) -> tuple[float, str] | None:
    """How old the lock is (seconds) and its owner token; None if it is gone. A lock whose
    timestamp cannot be read counts as fresh (never taken over on a guess)."""
    try:
        tags = client.get_registered_model(lock).tags or {}
    except MlflowException as error:
        if _code(error) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    try:
        acquired = float(tags.get("acquired_at", ""))
    except ValueError:
        acquired = time.time()
    return time.time() - acquired, str(tags.get("owner", ""))


@contextlib.contextmanager
def promotion_lock(client: MlflowClient, name: str, *, wait_s: float = LOCK_WAIT_S,
                   stale_s: float = LOCK_STALE_S,
                   note: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the promotion lock of ``name`` for the block: wait up to ``wait_s`` while another
    promotion holds it (LockBusy then), take over one older than ``stale_s`` with a note."""
    lock = f"{name}{LOCK_SUFFIX}"
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.create_registered_model(
                lock, tags={"acquired_at": f"{time.time():.3f}", "owner": owner},
                description=f"held while a promotion of {name!r} compares and moves an "
                            "alias; deleted after it")
            break
        except MlflowException as error:
            if _code(error) != "RESOURCE_ALREADY_EXISTS":
                raise RegistryError(f"cannot take the promotion lock of {name!r}: "
                                    f"{explain(error)}") from None
        except OSError as error:
            raise RegistryError(f"cannot take the promotion lock of {name!r}: "
                                f"{explain(error)}") from None
        held = _lock_age(client, lock)
        if held is not None and held[0] > stale_s:
            again = _lock_age(client, lock)  # still the same stale lock: take it over
            if again is not None and again[1] == held[1]:
                note(f"note: taking over the promotion lock of {name!r} left {held[0]:.0f} s "
                     "ago by a promotion that did not finish")
                with contextlib.suppress(MlflowException):
                    client.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            raise LockBusy(f"another promotion of {name!r} has held its lock for over "
                           f"{wait_s:.0f} s; try again when it ends (a lock left by a killed "
                           f"promotion is taken over after {stale_s:.0f} s)")
        time.sleep(LOCK_POLL_S)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a server gone now: the lock goes stale
            held = _lock_age(client, lock)
            if held is not None and held[1] == owner:
                client.delete_registered_model(lock)


def registered_run_ids(uri: str, items: list[str]) -> list[str]:
    """``items`` with each ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` replaced
    by the id of the run its version came from (other items as given); RegistryError (one
    line) for a version that does not exist or names no run."""
    refs = [parse_registry_uri(item) for item in items]
    if not any(refs):
        return list(items)
    client = MlflowClient(tracking_uri=uri)
    found = []
    for item, ref in zip(items, refs, strict=True):
        if ref is None:
            found.append(item)
            continue
        version = resolve(client, ref)
        if not version.run_id:
            raise RegistryError(f"{item}: version {version.version} names no run to compare")
        found.append(str(version.run_id))
    return found


def server_problem(uri: str, timeout_s: float = 5.0) -> str | None:
    """Why the tracking server at an http(s) ``uri`` does not answer its /health, or None
    (also for any other kind of store): a stopped server is one line at once, not after the
    store's retries."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError as error:
        return f"the MLflow server at {uri} answers HTTP {error.code} on /health"
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        why = (getattr(reason, "strerror", None) or str(reason)).lower()
        return (f"no MLflow server answers at {uri} ({why}); start it (make server) or "
                "point --uri (STORE=) at a running one")


def registered_source(uri: str, model: str | None) -> str:
    """`` (version 3 of NAME, run <id>)`` for a ``models:/<name>@<alias>`` or
    ``models:/<name>/<version>`` URI, else ""."""
    ref = parse_registry_uri(model) if model else None
    if ref is None:
        return ""
    try:
        version = resolve(MlflowClient(tracking_uri=uri), ref)
    except RegistryError:
        return ""
    run = f", run {version.run_id}" if version.run_id else ""
    return f" (version {version.version} of {ref.name}{run})"
