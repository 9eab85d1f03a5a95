"""The adapter store: a folder or object-storage prefix where training publishes LoRA adapters and serving
finds them.

Layout: `<root>/<name>/<n>/{adapter_config.json, adapter_model.safetensors, metadata.json, COMPLETE}` for each
version n = 1, 2, ..., and `<root>/<name>/CURRENT` naming the served one (see `core.adapter_versions`).
Versions are immutable: publishing adds one and moves the pointer, rollback moves the pointer back, and
`keep_versions` prunes the oldest. A version becomes visible whole: locally it is assembled in a hidden folder
and renamed into place; on object storage its `COMPLETE` marker is uploaded last and readers ignore versions
without it. Only safetensors weights are accepted (no pickle).

An adapter belongs to one base model: `metadata.json` records the base's `base_fingerprint`
(`core.fingerprint.model_fingerprint`), and `check_compatible` refuses to pair it with any other base.
"""

from __future__ import annotations

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

from core import adapter_versions as versions_mod
from core import storage
from core.adapter_versions import COMPLETE
from core.errors import UserError
from core.faults import kill_point

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")
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


def check_ref(ref: str) -> str:
    """'name' (its current version) or 'name@N' (pinned), with a valid name; UserError otherwise."""
    check_name(versions_mod.split_ref(ref)[0])
    return ref


@dataclass
class AdapterInfo:
    name: str
    uri: str
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = 1

    @property
    def ref(self) -> str:
        """`name@version`: the id servers cache and load by, so a new version is never mistaken for the old."""
        return versions_mod.ref(self.name, self.version)

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
    """Publish, list and fetch adapter versions under one root (local path, shared filesystem, s3:// / gs:// URI).

    `ref` arguments are `name` (the version `CURRENT` names) or `name@N` (that version, pinned). `keep_versions`
    bounds how many versions a publish leaves behind (the current one is always kept; None keeps all).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None = None,
        keep_versions: int | None = None,
    ) -> None:
        self.root = storage.strip_file_scheme(str(root))
        self.remote = storage.is_remote(self.root)
        if not self.remote:
            Path(self.root).mkdir(parents=True, exist_ok=True)
        self.cache_dir = Path(cache_dir) if cache_dir else storage.data_dir() / "adapter-cache"
        self.keep_versions = keep_versions

    def uri(self, name: str) -> str:
        """The adapter's folder (all its versions and the pointer)."""
        return storage.join(self.root, check_name(name))

    def versions(self, name: str) -> list[int]:
        """Complete versions of `name`, ascending (empty if there is none)."""
        return versions_mod.complete_versions(self.uri(name))

    def exists(self, name: str) -> bool:
        return bool(self.versions(name))

    def resolve(self, ref: str) -> tuple[str, int]:
        """'name' -> (name, current version); 'name@N' -> (name, N); UserError naming what exists otherwise."""
        name, pinned = versions_mod.split_ref(ref)
        found = self.versions(name)
        if not found:
            known = ", ".join(a for a in storage.list_dir(self.root) if NAME_RE.match(a)) or "none"
            raise UserError(f"adapter {name!r} not found in store {self.root} (available: {known})")
        if pinned is None:
            current = versions_mod.current_version(self.uri(name), found)
            assert current is not None  # found is not empty
            return name, current
        if pinned not in found:
            raise UserError(
                f"adapter {name!r} has no version {pinned} in store {self.root} "
                f"(versions: {', '.join(map(str, found))})"
            )
        return name, pinned

    def current(self, name: str) -> int:
        return self.resolve(name)[1]

    def list(self) -> list[AdapterInfo]:
        """The current version of every complete adapter, by name; unreadable ones are skipped and logged.

        One bad adapter must not hide the others (or break a server's model listing); `list_with_problems`
        returns the reasons too.
        """
        adapters, problems = self.list_with_problems()
        for name, reason in problems.items():
            logger.warning("adapter store %s: skipping %r: %s", self.root, name, reason)
        return adapters

    def list_with_problems(self) -> tuple[list[AdapterInfo], dict[str, str]]:
        """(current versions of readable adapters sorted by name, {name: why it was skipped})."""
        out: list[AdapterInfo] = []
        problems: dict[str, str] = {}
        for entry in storage.list_dir(self.root):
            if entry.startswith(".") or not NAME_RE.match(entry):
                continue
            try:
                # listed once per adapter: on object storage each look is a request
                found = self.versions(entry)
                if not found:
                    continue
                out.append(
                    self._info(entry, versions_mod.current_version(self.uri(entry), found) or found[-1])
                )
            except (UserError, OSError) as exc:
                if self.exists(entry):  # not just deleted between the listing and the read
                    problems[entry] = str(exc)
        return out, problems

    def get(self, ref: str) -> AdapterInfo:
        """Metadata of one version (`name` or `name@N`); a corrupt metadata.json is a UserError naming it."""
        return self._info(*self.resolve(ref))

    def _info(self, name: str, version: int) -> AdapterInfo:
        uri = versions_mod.version_uri(self.uri(name), version)
        meta_uri = storage.join(uri, METADATA)
        if not storage.exists(meta_uri):
            return AdapterInfo(name=name, uri=uri, metadata={}, version=version)
        try:
            text = storage.read_text(meta_uri)
        except UnicodeDecodeError:
            raise UserError(f"{meta_uri} is not UTF-8 text; re-publish the adapter") from None
        return AdapterInfo(name=name, uri=uri, metadata=read_metadata(text, meta_uri), version=version)

    def local_path(self, ref: str) -> Path:
        """A local folder holding that version (downloaded once into the cache for object storage)."""
        info = self.get(ref)
        path = Path(info.uri) if not self.remote else self._cached(info)
        validate_adapter_dir(path)
        return path

    def _cached(self, info: AdapterInfo) -> Path:
        """Versions are immutable, so a cached copy keyed by name and version never goes stale. Replicas on one
        node may race here: each downloads into its own temporary folder and the first rename wins."""
        path = self.cache_dir / info.name / str(info.version)
        if not (path / COMPLETE).exists():
            tmp = self.cache_dir / f".{info.name}-{uuid.uuid4().hex[:8]}"
            storage.download_dir(info.uri, tmp)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, path)
            except OSError:  # another replica won; its copy is the same immutable version
                shutil.rmtree(tmp, ignore_errors=True)
        self._prune_cache(info.name)
        return path

    def _prune_cache(self, name: str) -> None:
        """Drop cached versions the store no longer keeps (retention pruned them)."""
        kept = {str(v) for v in self.versions(name)}
        folder = self.cache_dir / name
        for entry in folder.iterdir() if folder.is_dir() else ():
            if entry.name not in kept:
                shutil.rmtree(entry, ignore_errors=True)

    def publish(
        self,
        src_dir: str | Path,
        name: str,
        metadata: dict[str, Any],
        overwrite: bool = False,
        base_fingerprint: str | None = None,
    ) -> AdapterInfo:
        """Publish the PEFT adapter in `src_dir` as a new version of `name` and point `name` at it.

        Earlier versions are never touched (only pruned past `keep_versions`), so a failed or killed publish
        leaves the served version as it was. `overwrite=False` refuses a name that already has a version.
        `base_fingerprint` (of the base it was trained on) lets servers and merges pair it with the right base.
        """
        check_name(name)
        if base_fingerprint is not None:
            metadata = {**metadata, "base_fingerprint": base_fingerprint}
        src = Path(src_dir)
        validate_adapter_dir(src, require_complete=False)
        staging = (
            Path(self.root) if not self.remote else storage.data_dir()
        ) / f".staging-{name}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(src, staging, ignore=shutil.ignore_patterns(COMPLETE, METADATA))
            with versions_mod.publish_lock(self.root, name):
                if self.exists(name) and not overwrite:
                    raise UserError(
                        f"adapter {name!r} already exists in {self.root}; pick a new name or publish a new "
                        "version of it (output.overwrite: true)"
                    )
                publish = self._publish_remote if self.remote else self._publish_local
                version = publish(staging, name, metadata)
                kill_point("adapter-renamed")
                versions_mod.write_pointer(self.uri(name), version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if self.keep_versions is not None:
            self.prune(name, self.keep_versions)
        self._sweep()
        return self.get(versions_mod.ref(name, version))

    def _publish_local(self, staging: Path, name: str, metadata: dict[str, Any]) -> int:
        """Under the publish lock: the version folder appears whole (one rename), COMPLETE already inside."""
        folder = Path(self.uri(name))
        folder.mkdir(parents=True, exist_ok=True)
        version = versions_mod.next_version(str(folder))
        meta = {**metadata, "name": name, "version": version, "published_at": time.time()}
        (staging / METADATA).write_text(json.dumps(meta, indent=2, default=str))
        (staging / COMPLETE).write_text(str(meta["published_at"]))
        _fsync_tree(staging)
        kill_point("adapter-staged")
        os.rename(staging, folder / str(version))
        _fsync_dir(folder)
        return version

    def _publish_remote(self, staging: Path, name: str, metadata: dict[str, Any]) -> int:
        """Claim a version number, upload into it, write COMPLETE last: readers ignore it until then."""
        folder = self.uri(name)
        version = versions_mod.claim_remote(folder, versions_mod.next_version(folder), staging.name)
        meta = {**metadata, "name": name, "version": version, "published_at": time.time()}
        (staging / METADATA).write_text(json.dumps(meta, indent=2, default=str))
        target = storage.join(folder, str(version))
        storage.upload_dir(staging, target)
        kill_point("adapter-staged")
        storage.write_text_atomic(storage.join(target, COMPLETE), str(meta["published_at"]))
        return version

    def _sweep(self, older_than_s: float = 3600.0) -> None:
        """Remove hidden staging/trash folders a killed publish or delete left behind (listings ignore them)."""
        if self.remote:
            return
        cutoff = time.time() - older_than_s
        for entry in Path(self.root).iterdir():
            try:
                stale = entry.name.startswith((".staging-", ".trash-")) and entry.stat().st_mtime < cutoff
            except FileNotFoundError:  # another publisher renamed or removed it meanwhile
                continue
            if stale:
                shutil.rmtree(entry, ignore_errors=True)

    def set_current(self, ref: str) -> AdapterInfo:
        """Point `name` at an existing version (rollback or roll forward): one atomic write."""
        name, version = versions_mod.split_ref(ref)
        if version is None:
            raise UserError(
                f"say which version to serve: {ref}@N (versions: {', '.join(map(str, self.versions(ref)))})"
            )
        self.resolve(ref)  # UserError unless that version is complete
        with versions_mod.publish_lock(self.root, name):
            versions_mod.write_pointer(self.uri(name), version)
        return self.get(ref)

    def prune(self, name: str, keep: int) -> list[int]:
        """Delete all but the newest `keep` versions, never the current one; returns the versions removed."""
        if keep < 1:
            raise UserError(f"keep_versions must be at least 1, got {keep}")
        with versions_mod.publish_lock(self.root, name):
            found = self.versions(name)
            current = versions_mod.current_version(self.uri(name), found)
            doomed = [v for v in found[:-keep] if v != current]
            for version in doomed:
                self._remove_version(name, version)
        return doomed

    def _remove_version(self, name: str, version: int) -> None:
        uri = versions_mod.version_uri(self.uri(name), version)
        if uri == self.uri(name):  # the legacy layout's files sit in the adapter folder itself
            storage.remove_file(storage.join(uri, COMPLETE))
            for entry in storage.list_dir(uri):
                if entry not in (versions_mod.POINTER,) and not versions_mod.VERSION_RE.match(entry):
                    storage.remove_file(storage.join(uri, entry))
            return
        if self.remote:
            storage.remove_file(storage.join(uri, COMPLETE))  # invisible first, then gone
            storage.remove_tree(uri)
            return
        trash = Path(self.root) / f".trash-{name}-{version}-{uuid.uuid4().hex[:8]}"
        os.rename(uri, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def delete(self, name: str) -> None:
        """Remove an adapter and all its versions (the pointer first, so readers see it gone at once)."""
        uri = self.uri(name)
        if self.remote:
            for version in self.versions(name):
                storage.remove_file(storage.join(uri, str(version), COMPLETE))
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


def _fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (the directory entry, not only the files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
