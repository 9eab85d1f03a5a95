"""Small network helpers for local clusters, tests and benchmarks (everything on 127.0.0.1)."""

from __future__ import annotations

import socket

from core.errors import UserError


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it); bind it soon, another process may take it."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def probe(host: str, port: int, timeout_s: float, what: str, hint: str) -> None:
    """One TCP connect before a client library's own connect, which can retry a dead address for minutes.

    UserError "cannot reach <what> (<host>:<port>: <reason>); <hint>" when nothing answers in `timeout_s`."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        raise UserError(f"cannot reach {what} ({host}:{port}: {exc.strerror or exc}); {hint}") from None
