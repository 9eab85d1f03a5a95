"""Fault points: where a test kills a real process (SIGKILL, no cleanup) to prove a write is crash-safe.

`DE_FAULT_KILL_AT=<point>` in the environment of a child process makes it die at that point; everywhere else
`kill_point` is a no-op. Points in use: `after-upsert` (retrieval: chunks written, commit marker not yet) and
`adapter-staged`, `adapter-renamed` (adapter store: a version assembled / in place, pointer not yet moved).
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "DE_FAULT_KILL_AT"


def kill_point(name: str) -> None:
    """SIGKILL this process if the environment names this point (a real crash, not an exception)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
