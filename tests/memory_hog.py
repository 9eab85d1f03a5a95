"""Another process holding memory, as on a shared machine: the engine must start beside it (KV cache in bytes,
checked against what is free), not only on an idle machine."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

HOG = """
import sys
n = int(sys.argv[1])
block = bytearray(n)
block[::4096] = b"x" * len(block[::4096])  # touch every page: resident, not just reserved
print("ready", flush=True)
sys.stdin.read()  # hold until the parent closes our stdin
"""


@contextlib.contextmanager
def memory_held(gib: float) -> Iterator[int]:
    """A child process keeps `gib` GiB resident for the duration; yields its pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOG, str(int(gib * 2**30))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", (
            "memory hog failed to start"
        )
        yield proc.pid
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
