"""Versions of one adapter: immutable `<root>/<name>/<n>/` folders and a `CURRENT` pointer naming the served one.

Why versions: a re-publish must never touch the version being served, so a failed or killed upload loses
nothing, and servers tell a new version from the old one by its id (`name@n`) instead of trusting a cache keyed
by name. Why a pointer: rollback is moving it, and moving it is one atomic write (a rename locally, one PUT on
object storage).

Allocating `n` must not race: locally `publish_lock` (an flock beside the store) serialises publishers of one
name; on S3 a version is claimed with a conditional PUT (`If-None-Match: *`), which only one publisher wins.
Other object stores fall back to check-then-write, which two simultaneous publishers of one name could both pass.

A store written before versions existed keeps its files directly in `<name>/`; that folder reads as version 1
(`legacy`), and the next publish becomes version 2 beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from core import storage
from core.errors import UserError

POINTER = "CURRENT"
COMPLETE = "COMPLETE"
CLAIM = "CLAIM"
VERSION_RE = re.compile(r"^[1-9][0-9]{0,8}$")
LEGACY = 1  # the version a pre-versioning `<name>/` folder reads as

logger = logging.getLogger(__name__)


def split_ref(ref: str) -> tuple[str, int | None]:
    """'name' -> (name, None: the current version); 'name@3' -> (name, 3). The name is not checked here."""
    if not isinstance(ref, str) or "@" not in ref:
        return ref, None
    name, _, version = ref.rpartition("@")
    if not VERSION_RE.match(version):
        raise UserError(f"invalid adapter version in {ref!r}: use name@N with N a version number (1, 2, ...)")
    return name, int(version)


def ref(name: str, version: int) -> str:
    return f"{name}@{version}"


def numbered(name_uri: str) -> list[int]:
    """Every numbered entry under the adapter's folder, complete or not, ascending (allocation must skip all)."""
    return sorted(int(e) for e in storage.list_dir(name_uri) if VERSION_RE.match(e))


def next_version(name_uri: str) -> int:
    """The number a new version gets: past every numbered entry (complete or not) and the legacy version 1."""
    taken = numbered(name_uri)
    if storage.exists(storage.join(name_uri, COMPLETE)):
        taken.append(LEGACY)
    return max(taken, default=0) + 1


def version_uri(name_uri: str, version: int) -> str:
    """The folder of one version; the legacy layout's version 1 is the adapter folder itself."""
    uri = storage.join(name_uri, str(version))
    if version == LEGACY and not storage.exists(uri) and storage.exists(storage.join(name_uri, COMPLETE)):
        return name_uri
    return uri


def complete_versions(name_uri: str) -> list[int]:
    """Versions a reader may use (their COMPLETE marker is written last), ascending."""
    found = [v for v in numbered(name_uri) if storage.exists(storage.join(name_uri, str(v), COMPLETE))]
    if LEGACY not in found and storage.exists(storage.join(name_uri, COMPLETE)):
        found.insert(0, LEGACY)
    return found


def read_pointer(name_uri: str) -> int | None:
    """The version `CURRENT` names, or None when there is none or it is unreadable (logged, never fatal)."""
    uri = storage.join(name_uri, POINTER)
    try:
        text = storage.read_text(uri).strip()
    except (FileNotFoundError, OSError, UnicodeDecodeError):
        return None
    if not VERSION_RE.match(text):
        logger.warning(
            "adapter pointer %s holds %r, not a version number; using the newest version", uri, text
        )
        return None
    return int(text)


def current_version(name_uri: str, versions: list[int] | None = None) -> int | None:
    """The served version: the pointer's if that version is complete, else the newest complete one."""
    versions = complete_versions(name_uri) if versions is None else versions
    pointed = read_pointer(name_uri)
    if pointed is not None and pointed in versions:
        return pointed
    if pointed is not None:
        logger.warning("adapter %s: CURRENT names version %d, which is not complete", name_uri, pointed)
    return versions[-1] if versions else None


def write_pointer(name_uri: str, version: int) -> None:
    storage.write_text_atomic(storage.join(name_uri, POINTER), str(version))


@contextlib.contextmanager
def publish_lock(root: str, name: str) -> Iterator[None]:
    """Serialise publishers of one adapter on a local or shared filesystem (no-op on object storage)."""
    if storage.is_remote(root):
        yield
        return
    locks = Path(root) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def claim_remote(name_uri: str, start: int, token: str, attempts: int = 50) -> int:
    """Claim the first free version >= `start` on object storage; only one publisher can win each number."""
    for version in range(start, start + attempts):
        if _claim(storage.join(name_uri, str(version), CLAIM), token):
            return version
    raise UserError(f"could not claim a new version of {name_uri} after {attempts} tries; retry the publish")


def _claim(uri: str, token: str) -> bool:
    if uri.startswith("s3://"):
        import boto3
        from botocore.exceptions import ClientError

        bucket, _, key = uri[len("s3://") :].partition("/")
        try:
            boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=token.encode(), IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                return False
            raise
        return True
    if storage.exists(
        uri
    ):  # no conditional write here: check, write, read back (narrows, cannot close, a race)
        return False
    storage.write_text_atomic(uri, token)
    return storage.read_text(uri) == token
