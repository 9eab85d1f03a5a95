"""Small network helpers for local clusters, tests and benchmarks (everything on 127.0.0.1)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it); bind it soon, another process may take it."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
