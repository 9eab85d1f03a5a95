"""The adapter store on object storage, for real: a moto S3 server on 127.0.0.1, reached over HTTP by boto3
(conditional version claims) and pyarrow (uploads, listings), as a bucket on AWS or MinIO would be."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import adapter_versions, storage
from core.adapter_store import AdapterStore
from core.errors import UserError
from core.faults import FAULT_ENV
from tests.core.test_adapter_store import make_adapter
from tests.core.test_adapter_versions import PUBLISH, REPO
from tests.s3_server import S3Server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def root(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    s3.apply(monkeypatch)
    return s3.bucket(f"adapters-{uuid.uuid4().hex[:8]}") + "/store"


def test_publish_version_cache_rollback_prune(root: str, tmp_path: Path) -> None:
    store = AdapterStore(root, cache_dir=tmp_path / "cache", keep_versions=2)
    store.publish(make_adapter(tmp_path / "v1", "v1"), "x", {"base_model": "tiny"}, base_fingerprint="fp")
    assert [a.ref for a in store.list()] == ["x@1"] and store.get("x").base_fingerprint == "fp"
    assert (store.local_path("x") / "adapter_model.safetensors").read_bytes() == b"weights-v1"
    store.publish(make_adapter(tmp_path / "v2", "v2"), "x", {}, overwrite=True)
    # the cache is keyed by version, so the new version is fetched, never the stale copy of v1
    assert (store.local_path("x") / "adapter_model.safetensors").read_bytes() == b"weights-v2"
    assert sorted(p.name for p in (tmp_path / "cache" / "x").iterdir()) == ["1", "2"]
    store.set_current("x@1")
    assert store.get("x").ref == "x@1"
    store.publish(make_adapter(tmp_path / "v3", "v3"), "x", {}, overwrite=True)
    assert store.versions("x") == [2, 3]  # keep_versions 2: v1 (no longer current) pruned from the bucket
    store.local_path("x")
    assert sorted(p.name for p in (tmp_path / "cache" / "x").iterdir()) == ["2", "3"]  # the cache follows
    with pytest.raises(UserError, match="already exists"):
        store.publish(make_adapter(tmp_path / "v4", "v4"), "x", {})


def test_a_version_number_is_claimed_once(root: str) -> None:
    folder = storage.join(root, "y")
    assert adapter_versions.claim_remote(folder, 1, "first") == 1
    assert adapter_versions.claim_remote(folder, 1, "second") == 2  # 1 is taken: conditional PUT refused


def test_killed_upload_keeps_the_served_version(root: str, s3: S3Server, tmp_path: Path) -> None:
    """SIGKILL after the files are uploaded but before COMPLETE: readers never see that version."""
    store = AdapterStore(root, cache_dir=tmp_path / "cache")
    store.publish(make_adapter(tmp_path / "v1", "v1"), "z", {})
    child = subprocess.Popen(
        [sys.executable, "-c", PUBLISH, root, str(make_adapter(tmp_path / "v2", "v2")), "z", "1"],
        cwd=REPO,
        env={**os.environ, **s3.env(), "DE_DATA_DIR": str(tmp_path / "child"), FAULT_ENV: "adapter-staged"},
    )
    assert child.wait(120) == -9
    assert store.versions("z") == [1] and store.get("z").ref == "z@1"
    assert (store.local_path("z") / "adapter_model.safetensors").read_bytes() == b"weights-v1"
    assert store.publish(make_adapter(tmp_path / "v3", "v3"), "z", {}, overwrite=True).ref == "z@3"
