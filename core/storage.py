"""Where files live: local paths, shared filesystems, and object storage (s3://, gs://, ...) behind one API.

Object storage goes through pyarrow's filesystems (fsspec-compatible URIs), so training checkpoints, the
adapter store and ingested corpora can sit on whatever the cluster shares. Local paths need nothing extra.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "abfss://", "az://", "hdfs://")
REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The project's data folder (tiny model, Milvus Lite file, adapter store, runs). `DE_DATA_DIR` overrides."""
    path = Path(os.environ.get("DE_DATA_DIR", REPO_ROOT / "data")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_remote(uri: str | os.PathLike[str]) -> bool:
    return str(uri).startswith(REMOTE_SCHEMES)


def strip_file_scheme(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _fs(uri: str):  # -> tuple[pyarrow.fs.FileSystem, str]
    from pyarrow import fs as pafs

    return pafs.FileSystem.from_uri(uri)


def exists(uri: str) -> bool:
    if not is_remote(uri):
        return Path(strip_file_scheme(uri)).exists()
    from pyarrow import fs as pafs

    fs, path = _fs(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def join(uri: str, *parts: str) -> str:
    if is_remote(uri):
        return "/".join([uri.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(strip_file_scheme(uri)).joinpath(*parts))


def list_dir(uri: str) -> list[str]:
    """Names (not paths) of the entries directly under `uri`; empty if it does not exist."""
    if not is_remote(uri):
        p = Path(strip_file_scheme(uri))
        return sorted(c.name for c in p.iterdir()) if p.is_dir() else []
    from pyarrow import fs as pafs

    fs, path = _fs(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos)


def read_text(uri: str) -> str:
    if not is_remote(uri):
        return Path(strip_file_scheme(uri)).read_text()
    fs, path = _fs(uri)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_text_atomic(uri: str, text: str) -> None:
    """Write a small file so readers see the old or the new content, never a torn one."""
    if is_remote(uri):  # object stores publish a whole object at once
        fs, path = _fs(uri)
        with fs.open_output_stream(path) as f:
            f.write(text.encode())
        return
    path = Path(strip_file_scheme(uri))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def upload_dir(local: str | Path, uri: str) -> None:
    """Copy a local directory tree to `uri` (local path or object storage)."""
    local = Path(local)
    if not is_remote(uri):
        shutil.copytree(local, strip_file_scheme(uri), dirs_exist_ok=True)
        return
    from pyarrow import fs as pafs

    fs, path = _fs(uri)
    pafs.copy_files(str(local), path, destination_filesystem=fs)


def download_dir(uri: str, local: str | Path) -> Path:
    """Copy `uri` into a local directory (a no-op copy for local sources) and return the local path."""
    local = Path(local)
    if not is_remote(uri):
        shutil.copytree(strip_file_scheme(uri), local, dirs_exist_ok=True)
        return local
    from pyarrow import fs as pafs

    fs, path = _fs(uri)
    local.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(local), source_filesystem=fs)
    return local


def remove_tree(uri: str) -> None:
    if not is_remote(uri):
        shutil.rmtree(strip_file_scheme(uri), ignore_errors=True)
        return
    fs, path = _fs(uri)
    fs.delete_dir(path)


def remove_file(uri: str) -> None:
    if not is_remote(uri):
        Path(strip_file_scheme(uri)).unlink(missing_ok=True)
        return
    fs, path = _fs(uri)
    fs.delete_file(path)


def check_writable(uri: str) -> None:
    """Raise UserError if `uri` cannot be written (used by preflights and the demo)."""
    from core.errors import UserError

    probe = join(uri, f".write-probe-{os.getpid()}")
    try:
        if not is_remote(uri):
            Path(strip_file_scheme(uri)).mkdir(parents=True, exist_ok=True)
        write_text_atomic(probe, "ok")
        if not is_remote(uri):
            Path(strip_file_scheme(probe)).unlink()
    except Exception as exc:  # noqa: BLE001 - any failure means "not writable" to the user
        raise UserError(f"storage {uri} is not writable: {exc}") from None
