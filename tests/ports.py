"""Waiting for a server process a test started to listen on its 127.0.0.1 port."""

from __future__ import annotations

import socket
import subprocess
import time


def wait_listening(proc: subprocess.Popen, port: int, timeout_s: float, name: str) -> None:
    """Return once 127.0.0.1:port accepts a connection; fail if `proc` exits or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert proc.poll() is None, f"{name} exited"
            assert time.monotonic() < deadline, f"{name} did not listen in time"
            time.sleep(0.2)
