"""What a printed UI link may be built on: ``tracking.ui_url`` and the address ``make ui``
announces. Links are printed for people to open, so nothing but a plain http(s) address is
accepted (no user info, query or fragment that could change where the link goes)."""

from __future__ import annotations

import re

# A name, an IPv4 address or a bracketed IPv6 address.
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
_HOST_PORT = re.compile(rf"https?://{_HOST}:(\d{{1,5}})")
# A path too: a UI behind a reverse proxy (https://host/mlflow).
_WITH_PATH = re.compile(rf"https?://{_HOST}(?::(\d{{1,5}}))?(?:/[A-Za-z0-9._~%/-]*)?")


def _valid_port(port: str | None) -> bool:
    return port is None or 0 < int(port) < 65536


def ui_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be ``tracking.ui_url`` (None: it can)."""
    match = _WITH_PATH.fullmatch(url)
    if match is None or not _valid_port(match.group(1)):
        return "must be the MLflow UI's address, http(s)://host[:port][/path], or null"
    return None


def host_port_url(text: str) -> str | None:
    """``text`` if it is exactly http(s)://host:port, else None."""
    match = _HOST_PORT.fullmatch(text)
    return text if match is not None and _valid_port(match.group(1)) else None
