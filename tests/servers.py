"""Real servers for tests, on 127.0.0.1 only, each stopped by the fixture that started it."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    """Until ``url`` answers 200; the server's log tail if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"server did not answer {url} in {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_mlflow_server(backend: str, workdir: Path) -> Iterator[str]:
    """``mlflow server`` on a free loopback port; yields its URL."""
    port = free_port()
    log = workdir / f"mlflow-server-{port}.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", backend,
             "--artifacts-destination", str(workdir / "artifacts"), "--serve-artifacts",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process, 120, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


class MlflowServer:
    """``mlflow server`` on one fixed loopback port with a given backend and artifact folder,
    which can be stopped (a lost server) and started again on the same port.

    A context manager: ``with MlflowServer(backend, artifacts, workdir) as server`` starts it
    and stops it on the way out, also when the test fails. The server runs in its own
    process group, so stopping it also stops the uvicorn process it starts.
    """

    def __init__(self, backend: str, artifacts: Path, workdir: Path,
                 port: int | None = None) -> None:
        self.backend, self.artifacts, self.workdir = backend, artifacts, workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None
        self._starts = 0

    def start(self, timeout: float = 120) -> str:
        """Start it (if it is not running) and wait for /health; return its URL."""
        if self._process is not None and self._process.poll() is None:
            return self.url
        self._starts += 1
        log = self.workdir / f"mlflow-server-{self.port}-{self._starts}.log"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "MLFLOW_DISABLE_TELEMETRY": "true"}
        with open(log, "w") as out:
            self._process = subprocess.Popen(
                [str(BIN / "mlflow"), "server", "--backend-store-uri", self.backend,
                 "--artifacts-destination", str(self.artifacts), "--serve-artifacts",
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                start_new_session=True,
            )
        try:
            wait_http(f"{self.url}/health", self._process, timeout, log)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self, *, kill: bool = False, timeout: float = 20) -> None:
        """Stop it: SIGTERM (SIGKILL with ``kill``, or after ``timeout`` s) to its process
        group; return once the port no longer answers."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        _signal_group(process.pid, signal.SIGKILL)  # a child left behind by the CLI
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
            except OSError:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.url} still answers after the server was stopped")

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, signum: int) -> None:
    """Signal the process group a server started with ``start_new_session`` leads."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def start_postgres(workdir: Path) -> Iterator[str]:
    """A throw-away PostgreSQL cluster on a loopback port; yields a SQLAlchemy URI.

    ``initdb`` refuses to run as root, so as root it runs as the ``postgres`` user.
    """
    bindir = _postgres_bin()
    if bindir is None:
        message = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # pytest's tmp folders are private to root; the postgres user needs its own folder.
    base = Path(tempfile.mkdtemp(prefix="pg-"))
    data = base / "data"
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust",
                    "-U", "mlflow"], check=True, capture_output=True)
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"),
         "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {data}", "start"],
        check=True, capture_output=True,
    )
    try:
        subprocess.run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                        "-U", "mlflow", "mlflow"], check=True, capture_output=True)
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast",
                        "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


# A cluster on loopback: without these, the head and the driver advertise the machine's
# network address instead of 127.0.0.1 and the driver never reaches the head.
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                    "RAY_USAGE_STATS_ENABLED": "0"}


def start_ray_head(workdir: Path) -> Iterator[str]:
    """A local Ray head on 127.0.0.1; yields its address. ``ray stop`` afterwards."""
    port = free_port()
    env = {**os.environ, **RAY_LOOPBACK_ENV}
    ray = str(BIN / "ray")
    started = subprocess.run(
        [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
        capture_output=True, text=True, env=env, timeout=180,
    )
    if started.returncode != 0:
        raise RuntimeError(f"ray start failed:\n{started.stdout}\n{started.stderr}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
