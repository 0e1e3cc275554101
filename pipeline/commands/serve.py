"""``python -m pipeline.commands.serve``: serve a run's model over HTTP (``make serve``), and the
port check ``make ui`` and ``make server`` run before they start.

    python -m pipeline.commands.serve --run-id <run id> [--uri STORE] [--host 127.0.0.1]
        [--port 5002]
    python -m pipeline.commands.serve --model models:/<model id> [--plugins my_transforms]
    python -m pipeline.commands.serve --model models:/<name>@champion (or models:/<name>/<version>)
    python -m pipeline.commands.serve --check-port HOST PORT [--target "make ui"] [--variable PORT]

Serving resolves the run to its logged model (``models:/<model_id>``), prints where it
listens (for a registered model: which version of which run) and a request that works,
then becomes ``mlflow models serve -m models:/<model_id>
--env-manager local``, with this interpreter's ``bin/`` first on the PATH (MLflow starts
``uvicorn`` by name) and ``MLFLOW_TRACKING_URI`` set to the store (default: the project's
``mlflow.db``, whatever the working directory). Whatever can be seen before the server
starts (no model named, an unknown run, a run without a model, a folder that is not a
model, a model whose ``MLmodel`` cannot be read or has no pyfunc flavor, a model whose
transforms come from a plugin module not named with ``--plugins`` (``make serve PLUGINS=``), a
port already in use) is one line on stderr and exit 1 (2 when no model is named). The server
imports the ``--plugins`` modules, and no module a stored model names.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config.paths import DEFAULT_STORE

if TYPE_CHECKING:
    from pipeline.tracking.model import ModelDescription

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5002
# How to get something servable, for every model that is not.
HOW_TO_GET_A_MODEL = ("serve a logged model: MODEL=models:/<model id> (printed at the end of "
                      "a run), MODEL=models:/<name>@champion (make promote registers one), or "
                      "RUN_ID=<run id> (make log-model RUN_ID=<run id> logs one for a run "
                      "without)")


def port_problem(host: str, port: int) -> str | None:
    """Why a server cannot listen on ``host:port`` (in use, not this machine's address),
    or None. Binds the way uvicorn does (SO_REUSEADDR), so a port a server just left is
    not reported."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except socket.gaierror:
        return f"{host} is not a known host name"
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            return f"{host}:{port} is already in use"
        if error.errno == errno.EADDRNOTAVAIL:
            return f"{host} is not an address of this machine"
        if error.errno == errno.EACCES:
            return f"port {port} needs more privileges than this user has"
        return f"cannot listen on {host}:{port} ({error.strerror or error})"
    return None


def free_port_near(host: str, port: int, tries: int = 50) -> int | None:
    """The first port after ``port`` that :func:`port_problem` finds free."""
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        if port_problem(host, candidate) is None:
            return candidate
    return None


def port_message(host: str, port: int, *, target: str, variable: str) -> str | None:
    """One line for a port a server cannot use, with a command that picks a free one."""
    problem = port_problem(host, port)
    if problem is None:
        return None
    if not problem.endswith("already in use"):
        return f"error: {target}: {problem}"
    free = free_port_near(host, port)
    hint = f": {target} {variable}={free}" if free is not None else ""
    return (f"error: {target}: {problem} (another process listens there); stop it, or "
            f"pick a free port{hint}")


def _client_host(host: str) -> str:
    """The address a local client uses to reach a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def curl_example(url: str, columns: list[str] | None) -> str:
    """A request that works: one row of zeros in the model's raw feature columns."""
    names = columns or ["<feature>", "..."]
    body = json.dumps({"dataframe_split": {"columns": names, "data": [[0.0] * len(names)]}})
    return (f"curl -s {url} -H 'Content-Type: application/json' -d '{body}'")


def serving_env(uri: str, plugins: list[str] | None = None) -> dict[str, str]:
    """The environment ``mlflow models serve`` needs: this venv's bin/ first on the PATH,
    the store as MLFLOW_TRACKING_URI, the user's ``plugins`` for the model to import (see
    pipeline/tracking/pyfunc_model.py), no telemetry and no progress bars."""
    from pipeline.tracking.model import PLUGINS_ENV  # MLflow: not for --check-port

    env = dict(os.environ)
    env[PLUGINS_ENV] = ",".join(plugins or [])
    bindir = str(Path(sys.executable).parent)  # not resolved: the venv's bin/, not Python's
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        env["PATH"] = bindir + (os.pathsep + path if path else "")
    env["MLFLOW_TRACKING_URI"] = uri
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return env


def serve_command(model: str, host: str, port: int) -> list[str]:
    mlflow = Path(sys.executable).parent / "mlflow"
    program = str(mlflow) if mlflow.exists() else (shutil.which("mlflow") or "mlflow")
    return [program, "models", "serve", "-m", model, "--env-manager", "local",
            "--host", host, "--port", str(port), "--workers", "1"]


def _resolve(uri: str, run_id: str | None, model: str | None,
             plugins: list[str]) -> tuple[str, list[str] | None]:
    """The model to serve and its input columns; PipelineError or NotServable otherwise. A
    folder needs no store; a run or a models:/ URI is looked up in ``uri``. Its preprocessor
    is restored as the server will (with the ``plugins`` the user named), so a transform
    whose module is not named is one line here, not a traceback from the server."""
    from pipeline.errors import PipelineError
    from pipeline.tracking.model import lean_without_model, resolve_served  # MLflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one-line output
    try:
        target, description, columns = resolve_served(uri, run_id=run_id, model=model)
    except PipelineError:
        if run_id and model is None and lean_without_model(uri, run_id):
            raise PipelineError(_lean_child_line(uri, run_id)) from None
        raise
    _check_preprocessor(target, description, plugins)
    return target, columns


def _check_preprocessor(target: str, description: ModelDescription,
                        plugins: list[str]) -> None:
    """Import the user's ``plugins`` (PluginProblem, one line, if one does not import), then
    restore the model's preprocessor (NotServable, one line, if it cannot be)."""
    import importlib

    from pipeline.tracking.model import NotServable, first_line, model_preprocessor
    from stages.transforms import StoredMetadataError, UnknownTransformError

    for module in plugins:
        try:
            importlib.import_module(module)
        except Exception as error:  # ImportError, or the module's own error on import
            raise PluginProblem(f"PLUGINS: cannot import {module!r} ({type(error).__name__}: "
                                f"{first_line(error)}); make it importable (PYTHONPATH) or "
                                "drop it") from None
    try:
        model_preprocessor(target, description)
    except UnknownTransformError as error:
        named = ",".join([*plugins, error.module])
        raise PluginProblem(f"the model uses transform {error.name!r} from the plugin module "
                            f"{error.module!r}, which is not imported; name it (importable on "
                            f"PYTHONPATH): make serve ... PLUGINS={named}") from None
    except StoredMetadataError as error:
        raise NotServable(f"its preprocessing cannot be restored: {first_line(error)}"
                          ) from None
    except Exception as error:  # MLflow could not fetch the checkpoint
        raise NotServable(f"cannot read the model's checkpoint: {first_line(error)}"
                          ) from None


def _lean_child_line(uri: str, run_id: str) -> str:
    """The one line for a lean sweep job's run, which has no model until it is logged."""
    store = "" if uri == _default_store() else f" STORE={uri}"
    return (f"RUN_ID={run_id} is a lean sweep job (sweep.child_record=lean), which records "
            f"no model to keep sweeps fast; log its model first: make log-model "
            f"RUN_ID={run_id}{store}, then make serve RUN_ID={run_id}{store}")


def _default_store() -> str:
    """The project's own store (what the make targets name without STORE=)."""
    return f"sqlite:///{DEFAULT_STORE}"


class PluginProblem(Exception):
    """A plugin module the user named that cannot be imported, or one the model's transforms
    need that the user did not name: one line."""


def serve(uri: str | None, host: str, port: int, *, run_id: str | None,
          model: str | None, plugins: list[str] | None = None) -> int:
    """Check, resolve, then replace this process with the model server (returns only on
    an error: its exit status)."""
    if not run_id and not model:
        print("error: make serve: name the model to serve: make serve RUN_ID=<run id> "
              "(or MODEL=models:/<model id>, MODEL=models:/<name>@champion)", file=sys.stderr)
        return 2
    message = port_message(host, port, target="make serve", variable="PORT")
    if message is not None:
        print(message, file=sys.stderr)
        return 1

    # Hydra and MLflow take seconds to import: `make ui`'s port check (--check-port) and a
    # usage error answer without them.
    from pipeline.errors import PipelineError
    from pipeline.tracking.model import NotServable
    from pipeline.tracking.registry import registered_source
    from pipeline.tracking.store import store_uri

    uri = store_uri(uri)
    try:
        target, columns = _resolve(uri, run_id, model, list(plugins or []))
    except (PipelineError, PluginProblem) as error:
        print(f"error: make serve: {error}", file=sys.stderr)
        return 1
    except NotServable as problem:
        named = f"MODEL={model}" if model else f"RUN_ID={run_id}"
        print(f"error: make serve: {named}: {problem}; {HOW_TO_GET_A_MODEL}", file=sys.stderr)
        return 1
    url = f"http://{_client_host(host)}:{port}/invocations"
    source = f" (run {run_id})" if run_id and not model else registered_source(uri, model)
    print(f"Serving {target}{source} from {uri}\n"
          f"  at {url}  (answers in a few seconds; Ctrl-C stops it)\n"
          f"  try: {curl_example(url, columns)}", flush=True)
    sys.stderr.flush()
    command = serve_command(target, host, port)
    os.execve(command[0], command, serving_env(uri, plugins))
    return 1  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.commands.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-id", default=None, help="serve this run's logged model")
    parser.add_argument("--model", default=None, help="serve this model URI instead "
                        "(models:/<model id>, models:/<name>@<alias>, "
                        "models:/<name>/<version> or a local folder)")
    parser.add_argument("--uri", default=None, help="the store's tracking URI (default: the "
                        "project's mlflow.db)")
    parser.add_argument("--plugins", default="", help="comma-separated modules the model's "
                        "transforms come from (a run's pipeline.plugins): the server imports "
                        "these, never a module named by the stored model")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT)
    parser.add_argument("--check-port", nargs=2, metavar=("HOST", "PORT"), default=None,
                        help="only check that a server can listen there (exit 1 if not)")
    parser.add_argument("--target", default="python -m pipeline.commands.serve",
                        help="the command named in --check-port's message (make ui)")
    parser.add_argument("--variable", default="--port",
                        help="the setting that picks the port, for the message (PORT)")
    args = parser.parse_args(argv)
    if args.check_port is not None:
        host, port = args.check_port[0], _port(args.check_port[1])
        message = port_message(host, port, target=args.target, variable=args.variable)
        if message is not None:
            print(message, file=sys.stderr)
            return 1
        return 0
    plugins = [name.strip() for name in args.plugins.split(",") if name.strip()]
    return serve(args.uri or None, args.host, args.port, run_id=args.run_id or None,
                 model=args.model or None, plugins=plugins)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        print(f"error: {text!r} is not a port number (1-65535)", file=sys.stderr)
        raise SystemExit(2)
    return port


if __name__ == "__main__":
    sys.exit(main())
