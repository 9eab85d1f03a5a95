"""The adapter store: a folder or object-storage prefix where training publishes LoRA adapters and serving
finds them.

Layout: `<root>/<name>/{adapter_config.json, adapter_model.safetensors, metadata.json, COMPLETE}`.
On a local or shared filesystem publishing is atomic: the adapter is assembled in a hidden temporary folder
and renamed into place (an overwrite swaps folders and rolls back on failure). On object storage `COMPLETE` is
written last and readers ignore adapters without it; an overwrite there removes the old `COMPLETE` first, so
during the upload readers see "not found", never a mix of old and new files. Either way a reader never sees
half an adapter. Only safetensors weights are accepted (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster import storage
from cluster.errors import UserError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")
COMPLETE = "COMPLETE"
METADATA = "metadata.json"


def check_name(name: str) -> str:
    """Adapter names address the store only: no paths, no traversal, no hidden names."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise UserError(
            f"invalid adapter name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


@dataclass
class AdapterInfo:
    name: str
    uri: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def base_model(self) -> str | None:
        return self.metadata.get("base_model")


class AdapterStore:
    """Publish, list and fetch adapters under one root (local path, shared filesystem or s3:// / gs:// URI)."""

    def __init__(self, root: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = storage.strip_file_scheme(str(root))
        self.remote = storage.is_remote(self.root)
        if not self.remote:
            Path(self.root).mkdir(parents=True, exist_ok=True)
        self.cache_dir = Path(cache_dir) if cache_dir else storage.data_dir() / "adapter-cache"

    def uri(self, name: str) -> str:
        return storage.join(self.root, check_name(name))

    def exists(self, name: str) -> bool:
        return storage.exists(storage.join(self.uri(name), COMPLETE))

    def list(self) -> list[AdapterInfo]:
        """Complete adapters only, sorted by name; half-published or hidden folders are skipped."""
        out = []
        for entry in storage.list_dir(self.root):
            if entry.startswith(".") or not NAME_RE.match(entry):
                continue
            if self.exists(entry):
                out.append(self.get(entry))
        return out

    def get(self, name: str) -> AdapterInfo:
        if not self.exists(name):
            known = ", ".join(a for a in storage.list_dir(self.root) if not a.startswith(".")) or "none"
            raise UserError(f"adapter {name!r} not found in store {self.root} (available: {known})")
        meta_uri = storage.join(self.uri(name), METADATA)
        meta = json.loads(storage.read_text(meta_uri)) if storage.exists(meta_uri) else {}
        return AdapterInfo(name=name, uri=self.uri(name), metadata=meta)

    def local_path(self, name: str) -> Path:
        """A local directory holding the adapter (downloaded once into the cache for object storage)."""
        info = self.get(name)
        if not self.remote:
            path = Path(info.uri)
        else:
            stamp = str(info.metadata.get("published_at", ""))
            path = self.cache_dir / f"{name}-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}"
            if not (path / COMPLETE).exists():
                tmp = self.cache_dir / f".{name}-{uuid.uuid4().hex[:8]}"
                storage.download_dir(info.uri, tmp)
                shutil.rmtree(path, ignore_errors=True)
                os.rename(tmp, path)
        validate_adapter_dir(path)
        return path

    def publish(
        self, src_dir: str | Path, name: str, metadata: dict[str, Any], overwrite: bool = False
    ) -> AdapterInfo:
        """Publish the PEFT adapter in `src_dir` as `name`, atomically. Refuses to replace one unless asked."""
        check_name(name)
        src = Path(src_dir)
        validate_adapter_dir(src, require_complete=False)
        if self.exists(name) and not overwrite:
            raise UserError(
                f"adapter {name!r} already exists in {self.root}; pick a new name or overwrite it"
            )
        meta = {**metadata, "name": name, "published_at": time.time()}
        if self.remote:
            return self._publish_remote(src, name, meta)
        root = Path(self.root)
        staging = root / f".staging-{name}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(src, staging, ignore=shutil.ignore_patterns(COMPLETE, METADATA))
            (staging / METADATA).write_text(json.dumps(meta, indent=2, default=str))
            (staging / COMPLETE).write_text(str(meta["published_at"]))
            _fsync_tree(staging)
            target = root / name
            if target.exists():  # overwrite: swap the old one out, the new one in
                trash = root / f".trash-{name}-{uuid.uuid4().hex[:8]}"
                os.rename(target, trash)
                try:
                    os.rename(staging, target)
                except BaseException:
                    os.rename(trash, target)  # roll back: the old adapter stays whole and visible
                    raise
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.get(name)

    def _publish_remote(self, src: Path, name: str, meta: dict[str, Any]) -> AdapterInfo:
        uri = self.uri(name)
        if storage.exists(storage.join(uri, COMPLETE)):
            storage.remove_file(storage.join(uri, COMPLETE))  # invisible first, then replaced
            storage.remove_tree(uri)
        staging = Path(storage.data_dir()) / f".upload-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(src, staging, ignore=shutil.ignore_patterns(COMPLETE, METADATA))
            (staging / METADATA).write_text(json.dumps(meta, indent=2, default=str))
            storage.upload_dir(staging, uri)
            storage.write_text_atomic(storage.join(uri, COMPLETE), str(meta["published_at"]))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.get(name)

    def delete(self, name: str) -> None:
        uri = self.uri(name)
        if self.remote:
            storage.remove_tree(uri)
            return
        trash = Path(self.root) / f".trash-{name}-{uuid.uuid4().hex[:8]}"
        os.rename(uri, trash)
        shutil.rmtree(trash, ignore_errors=True)


def validate_adapter_dir(path: Path, require_complete: bool = False) -> None:
    """A standard PEFT adapter folder with safetensors weights; pickled weights are refused."""
    if not path.is_dir():
        raise UserError(f"adapter folder {path} does not exist")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        pickled = (
            " (found adapter_model.bin: pickled weights are not accepted)"
            if (path / "adapter_model.bin").exists()
            else ""
        )
        raise UserError(f"adapter folder {path} lacks {', '.join(missing)}{pickled}")
    try:
        json.loads((path / "adapter_config.json").read_text())
    except ValueError as exc:
        raise UserError(f"{path / 'adapter_config.json'} is not valid JSON: {exc}") from None
    if require_complete and not (path / COMPLETE).exists():
        raise UserError(f"adapter folder {path} is incomplete (no {COMPLETE} marker)")


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
