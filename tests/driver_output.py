"""What a CLI boundary wrote to stderr, without the lines Ray forwards there from workers.

A test process that is also the Ray driver gets its workers' and replicas' log lines ("(ServeReplica:... pid=N)
INFO ...") on its own stderr at any moment (Ray's log_to_driver); they are Ray's, not the boundary's.
"""

from __future__ import annotations

import re

# Optional colour code, then "(Name pid=N)": how Ray prefixes every forwarded line.
_RAY_FORWARDED = re.compile(r"^(\x1b\[[0-9;]*m)?\(\S+ pid=\d+")


def own_lines(stderr: str) -> list[str]:
    """The stderr lines this process wrote itself."""
    return [line for line in stderr.splitlines() if not _RAY_FORWARDED.match(line)]
