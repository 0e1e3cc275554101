"""A past run's stored config, read back as the untrusted data it is.

Anyone who can write the store can edit a run's ``config.yaml`` artifact, so reading it back
(``make rerun``, ``make plots``) checks it before anything uses it: it must be plain YAML
free of interpolations (:func:`load_stored_config`: nothing is resolved), the
``pipeline.plugins`` it names are imported only if the user named them too
(:func:`check_stored_plugins`), and its CSV ``data.path`` must hold the data the run was
trained on (:func:`stored_data_problem`). Each refusal is one line.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pipeline.config.schema import validate_data
from pipeline.errors import PipelineError
from stages.load_csv import check_csv_path, load_csv


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load that refuses YAML aliases: a stored config never has them (it is written
    by yaml.safe_dump of fresh dicts), and a crafted one could expand exponentially."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"a YAML alias at line {mark.line + 1}")
        return super().compose_node(parent, index)


_PLAIN = (str, int, float, bool, type(None))  # what yaml.safe_dump of a config writes


def _foreign(node: Any, where: str = "") -> tuple[str, Any] | None:
    """The first key (dotted path) whose name or value holds ``${``, or whose value is not a
    plain YAML scalar, mapping or list; and that name or value."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if "${" in str(key):
                return path, str(key)
            found = _foreign(value, path)
            if found is not None:
                return found
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found = _foreign(item, f"{where}[{i}]")
            if found is not None:
                return found
    elif (isinstance(node, str) and "${" in node) or not isinstance(node, _PLAIN):
        return where, node
    return None


def load_stored_config(run_id: str, text: str) -> dict[str, Any]:
    """The run's stored config.yaml as a plain dict, refused (PipelineError, one line) unless
    it is a YAML mapping free of interpolations.

    The stored config is the RESOLVED config, so any ``${...}`` in it (oc.env, oc.decode,
    a custom resolver, even a plain reference) did not come from this pipeline; resolving
    it would read the rerunning user's environment or files. Nothing is resolved here.
    """
    where = f"rerun: the stored config of run {run_id}"
    try:
        recorded = yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader: plain types only
    except (yaml.YAMLError, RecursionError) as error:
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PipelineError(f"{where} is not plain YAML ({problem}); refusing it") from None
    if not isinstance(recorded, dict):
        raise PipelineError(f"{where} is {type(recorded).__name__}, not a mapping; refusing it")
    found = _foreign(recorded)
    if found is not None:
        key, value = found
        if not isinstance(value, str):
            raise PipelineError(f"{where} has a {type(value).__name__} at {key}, which no "
                                "config holds; refusing it")
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise PipelineError(f"{where} has an interpolation at {key} ({shown!r}); refusing "
                            "to resolve it")
    return recorded


# -- what a stored config may not decide ---------------------------------------------------
PLUGINS = "pipeline.plugins"
DATA_PATH = "data.path"
_MODULE_NAME = re.compile(r"[\w.\-]+")
# Why a stored data.path is refused (stored_data_problem), as callers tell them apart.
NO_DIGEST = "the run has no data_digest tag to check it against"
NO_FILE = "it does not exist"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_stored_plugins(run_id: str, recorded: dict[str, Any], named: Any,
                         command: Callable[[str], str]) -> None:
    """Refuse (PipelineError, one line) a stored config whose ``pipeline.plugins`` names a
    module that ``named`` (what the user gave on the command line) does not: importing it
    would run code that anyone who can write the store chose. ``command`` gives the command
    that accepts them, for a ``[a,b]`` value. Nothing is imported here."""
    group = recorded.get("pipeline")
    stored = group.get("plugins") if isinstance(group, dict) else None
    if stored is None or stored == []:
        return
    where = f"run {run_id}'s stored config"
    if not isinstance(stored, list) or not all(isinstance(n, str) for n in stored):
        raise PipelineError(f"{where} has {PLUGINS} {_shown(stored)}, not a list of module "
                            "names; refusing it")
    odd = next((n for n in stored if not _MODULE_NAME.fullmatch(n)), None)
    if odd is not None:
        raise PipelineError(f"{where} has {PLUGINS} entry {_shown(odd)}, which is not a "
                            "module name; refusing it")
    accepted = named if isinstance(named, list) else []
    if all(name in accepted for name in stored):
        return
    both = [*stored, *(n for n in accepted if isinstance(n, str) and n not in stored)]
    one = len(stored) == 1
    raise PipelineError(
        f"{where} names {PLUGINS} [{', '.join(stored)}], and code that a stored config "
        f"names is never imported; if you trust {'it' if one else 'them'}, name "
        f"{'it' if one else 'them'}: {command('[' + ','.join(both) + ']')}")


def stored_data_problem(data_node: Any, recorded_digest: str | None) -> tuple[Path, str] | None:
    """Why a stored CSV ``data.path`` does not hold the data its run was trained on (the
    path and a reason that quotes nothing of the file), or None when it does: loaded with
    the stored data settings, its digest must be the run's ``data_digest``. The CSV loader's
    own errors quote the offending value, so none is passed on. Generated data
    (data.source=rf) reads no file: nothing to check. ConfigError for bad stored settings.
    """
    data = validate_data(data_node)  # the stored settings, as the run used them
    if data.source != "csv":
        return None
    path = Path(data.path)
    if recorded_digest is None:
        return path, NO_DIGEST
    if not path.exists():
        return path, NO_FILE
    try:
        check_csv_path(path)  # a pipe or a device is never opened
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropped rows: counted in a warning
            loaded = load_csv(path, label_column=data.label_column, header=data.header,
                              delimiter=data.delimiter, drop_na=data.drop_na,
                              decimal=data.decimal)
    except Exception:  # any failure means: not that run's CSV
        return path, "it does not load as that run's CSV"
    if loaded.digest() != recorded_digest:
        return path, "its rows are not that run's data"
    return None


def shown_path(path: Path) -> str:
    """A path on one line (repr when it holds control characters)."""
    return str(path) if str(path).isprintable() else repr(str(path))
