"""The adapter store: a folder or object-storage prefix where training publishes LoRA adapters and serving
finds them.

Layout: `<root>/<name>/{adapter_config.json, adapter_model.safetensors, metadata.json, COMPLETE}`.
On a local or shared filesystem publishing is atomic: the adapter is assembled in a hidden temporary folder
and renamed into place (an overwrite swaps folders and rolls back on failure). On object storage `COMPLETE` is
written last and readers ignore adapters without it; an overwrite there removes the old `COMPLETE` first, so
during the upload readers see "not found", never a mix of old and new files. Either way a reader never sees
half an adapter. Only safetensors weights are accepted (no pickle).

An adapter belongs to one base model: `metadata.json` records the base's `base_fingerprint`
(`cluster.fingerprint.model_fingerprint`), and `check_compatible` refuses to pair it with any other base.
"""

from __future__ import annotations

import hashlib
import json
import logging
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

logger = logging.getLogger(__name__)


class AdapterBaseMismatch(UserError):
    """An adapter paired with a base it was not trained on: its weights would load and answer nonsense."""


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

    @property
    def base_fingerprint(self) -> str | None:
        return self.metadata.get("base_fingerprint")

    def fits(self, fingerprint: str) -> bool:
        """Trained on the base with this fingerprint (adapters that record none fit no base)."""
        return bool(self.base_fingerprint) and self.base_fingerprint == fingerprint


def check_compatible(info: AdapterInfo, fingerprint: str, base_name: str, role: str = "served base") -> None:
    """Raise AdapterBaseMismatch unless `info` was trained on the base `base_name` with `fingerprint`.

    A LoRA adapter only has a meaning on top of its own base; another base of the same shape loads it without
    complaint and answers garbage, so the pairing is checked rather than trusted. `role` says what `base_name`
    is to the caller ("served base", "merge base") so the message reads right.
    """
    if info.fits(fingerprint):
        return
    trained_on = info.base_model or "an unrecorded base"
    if not info.base_fingerprint:
        raise AdapterBaseMismatch(
            f"adapter {info.name!r} was trained on {trained_on!r} but records no base fingerprint, so it cannot "
            f"be checked against the {role} {base_name!r}; re-publish it with base_fingerprint "
            "(python -m training records it)"
        )
    raise AdapterBaseMismatch(
        f"adapter {info.name!r} was trained on base {trained_on!r} (fingerprint {info.base_fingerprint}), "
        f"not on the {role} {base_name!r} (fingerprint {fingerprint})"
    )


def read_metadata(text: str, where: str) -> dict[str, Any]:
    """Parse metadata.json; a corrupt file is a UserError naming it (so listings can skip that one adapter)."""
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{where} is not valid JSON ({exc}); re-publish the adapter") from None
    if not isinstance(meta, dict):
        raise UserError(f"{where} holds {type(meta).__name__}, not a JSON object; re-publish the adapter")
    return meta


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
        """Complete adapters only, sorted by name; half-published, hidden or unreadable ones are skipped.

        One bad adapter must not hide the others (or break a server's model listing): unreadable ones are
        logged; `list_with_problems` returns them too.
        """
        adapters, problems = self.list_with_problems()
        for name, reason in problems.items():
            logger.warning("adapter store %s: skipping %r: %s", self.root, name, reason)
        return adapters

    def list_with_problems(self) -> tuple[list[AdapterInfo], dict[str, str]]:
        """(complete readable adapters sorted by name, {name: why it was skipped} for unreadable ones)."""
        out: list[AdapterInfo] = []
        problems: dict[str, str] = {}
        for entry in storage.list_dir(self.root):
            if entry.startswith(".") or not NAME_RE.match(entry):
                continue
            try:
                if self.exists(entry):
                    out.append(self.get(entry))
            except (UserError, OSError) as exc:
                if self.exists(entry):  # not just deleted between the listing and the read
                    problems[entry] = str(exc)
        return out, problems

    def get(self, name: str) -> AdapterInfo:
        if not self.exists(name):
            known = ", ".join(a for a in storage.list_dir(self.root) if not a.startswith(".")) or "none"
            raise UserError(f"adapter {name!r} not found in store {self.root} (available: {known})")
        meta_uri = storage.join(self.uri(name), METADATA)
        if not storage.exists(meta_uri):
            return AdapterInfo(name=name, uri=self.uri(name), metadata={})
        try:
            text = storage.read_text(meta_uri)
        except UnicodeDecodeError:
            raise UserError(f"{meta_uri} is not UTF-8 text; re-publish the adapter") from None
        return AdapterInfo(name=name, uri=self.uri(name), metadata=read_metadata(text, meta_uri))

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
        self,
        src_dir: str | Path,
        name: str,
        metadata: dict[str, Any],
        overwrite: bool = False,
        base_fingerprint: str | None = None,
    ) -> AdapterInfo:
        """Publish the PEFT adapter in `src_dir` as `name`, atomically. Refuses to replace one unless asked.

        `base_fingerprint` (of the base it was trained on) is what lets servers and merges pair it with the
        right base; without it (here or in `metadata`) the adapter is listed by no server.
        """
        check_name(name)
        if base_fingerprint is not None:
            metadata = {**metadata, "base_fingerprint": base_fingerprint}
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
