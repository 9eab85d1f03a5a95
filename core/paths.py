"""`data:<path>` references in configs and flags, resolved the same way by every package.

Serving, training and retrieval all name files in the project's data folder (`data:milvus.db`); keeping the
rule here lets training resolve them without importing serving. `serving.config.resolve_path` is this
function with `base=REPO_ROOT`.
"""

from __future__ import annotations

from pathlib import Path

from core.storage import data_dir, is_remote

DATA_PREFIX = "data:"


def resolve_data_path(value: str, base: str | Path | None = None) -> str:
    """`data:x` -> <data dir>/x; remote and http(s) URIs unchanged; relative paths against `base` (if given).

    Without `base`, relative paths stay relative (to the working directory), like CLI flags elsewhere.
    """
    if is_remote(value) or value.startswith(("http://", "https://", "tcp://", "grpc://")):
        return value
    if value.startswith(DATA_PREFIX):
        return str(data_dir() / value[len(DATA_PREFIX) :])
    path = Path(value).expanduser()
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    return str(path)
