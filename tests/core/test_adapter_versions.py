"""Adapter versions: a re-publish adds an immutable version and moves the pointer; rollback moves it back;
retention prunes; a real SIGKILL at any point of a publish leaves the served version whole and the store usable."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.adapter_store import AdapterStore
from core.errors import UserError
from core.faults import FAULT_ENV
from tests.core.test_adapter_store import make_adapter

REPO = Path(__file__).resolve().parents[2]
PUBLISH = (
    "import sys\nfrom core.adapter_store import AdapterStore\n"
    "for _ in range(int(sys.argv[4])):\n"
    "    AdapterStore(sys.argv[1]).publish(sys.argv[2], sys.argv[3], {'base_model': 'tiny'}, overwrite=True)\n"
)


def weights(store: AdapterStore, ref: str) -> bytes:
    return (store.local_path(ref) / "adapter_model.safetensors").read_bytes()


def publish_in_child(root: Path, src: Path, name: str, times: int = 1, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PUBLISH, str(root), str(src), name, str(times)],
        cwd=REPO,
        env={**os.environ, **env},
    )


def test_republish_adds_a_version_and_old_ones_stay_addressable(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    first = store.publish(make_adapter(tmp_path / "a", "v1"), "x", {})
    second = store.publish(make_adapter(tmp_path / "b", "v2"), "x", {}, overwrite=True)
    assert (first.ref, second.ref) == ("x@1", "x@2")
    assert store.versions("x") == [1, 2] and store.current("x") == 2
    assert weights(store, "x") == b"weights-v2" and weights(store, "x@1") == b"weights-v1"
    assert [a.ref for a in store.list()] == ["x@2"]
    assert store.get("x@1").metadata["version"] == 1
    with pytest.raises(UserError, match=r"no version 7 .*versions: 1, 2"):
        store.get("x@7")
    with pytest.raises(UserError, match="invalid adapter version"):
        store.get("x@latest")


def test_rollback_moves_the_pointer_and_the_next_publish_is_newest(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    for marker in ("v1", "v2"):
        store.publish(make_adapter(tmp_path / marker, marker), "x", {}, overwrite=True)
    assert store.set_current("x@1").ref == "x@1"
    assert weights(store, "x") == b"weights-v1"
    store.publish(make_adapter(tmp_path / "v3", "v3"), "x", {}, overwrite=True)
    assert store.current("x") == 3 and weights(store, "x") == b"weights-v3"
    with pytest.raises(UserError, match="say which version"):
        store.set_current("x")


def test_retention_prunes_oldest_but_never_the_current(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store", keep_versions=2)
    for marker in ("v1", "v2", "v3", "v4"):
        store.publish(make_adapter(tmp_path / marker, marker), "x", {}, overwrite=True)
    assert store.versions("x") == [3, 4]
    store.set_current("x@3")
    assert store.prune("x", keep=1) == []  # 3 is current, 4 is the newest: both stay
    store.set_current("x@4")
    assert store.prune("x", keep=1) == [3] and store.versions("x") == [4]
    assert weights(store, "x") == b"weights-v4"


def test_unreadable_pointer_falls_back_to_newest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = AdapterStore(tmp_path / "store")
    for marker in ("v1", "v2"):
        store.publish(make_adapter(tmp_path / marker, marker), "x", {}, overwrite=True)
    (tmp_path / "store" / "x" / "CURRENT").write_text("garbage\n")
    with caplog.at_level(logging.WARNING):
        assert store.current("x") == 2
    assert "not a version number" in caplog.text
    (tmp_path / "store" / "x" / "CURRENT").write_text("9")  # names a version that is not there
    assert store.current("x") == 2 and [a.ref for a in store.list()] == ["x@2"]


def test_legacy_layout_reads_as_version_one(tmp_path: Path) -> None:
    """A store written before versions: files directly in <name>/ with COMPLETE; it keeps serving."""
    legacy = make_adapter(tmp_path / "store" / "old", "legacy")
    (legacy / "metadata.json").write_text(json.dumps({"name": "old", "base_model": "tiny"}))
    (legacy / "COMPLETE").write_text("1")
    store = AdapterStore(tmp_path / "store")
    assert store.versions("old") == [1] and weights(store, "old") == b"weights-legacy"
    store.publish(make_adapter(tmp_path / "new", "new"), "old", {}, overwrite=True)
    assert store.versions("old") == [1, 2] and weights(store, "old") == b"weights-new"
    assert weights(store, "old@1") == b"weights-legacy"
    assert store.prune("old", keep=1) == [1] and store.versions("old") == [2]
    assert weights(store, "old") == b"weights-new"


@pytest.mark.parametrize("point", ["adapter-staged", "adapter-renamed"])
def test_killed_publish_loses_nothing(tmp_path: Path, point: str) -> None:
    """Real SIGKILL of a publishing process before and after its version lands: v1 stays served and whole."""
    root = tmp_path / "store"
    store = AdapterStore(root)
    store.publish(make_adapter(tmp_path / "v1", "v1"), "x", {})
    child = publish_in_child(root, make_adapter(tmp_path / "v2", "v2"), "x", **{FAULT_ENV: point})
    assert child.wait(120) == -9  # killed, not an exception
    assert store.current("x") == 1 and weights(store, "x") == b"weights-v1"
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".staging-")]
    assert len(leftovers) == (0 if point == "adapter-renamed" else 1)  # hidden, never listed
    third = store.publish(make_adapter(tmp_path / "v3", "v3"), "x", {}, overwrite=True)
    # after a kill past the rename, version 2 exists (complete, never pointed at): the next one is 3
    assert third.ref == ("x@3" if point == "adapter-renamed" else "x@2")
    assert weights(store, "x") == b"weights-v3"
    store._sweep(older_than_s=0)
    assert not [p for p in root.iterdir() if p.name.startswith((".staging-", ".trash-"))]


def test_concurrent_publishers_never_share_a_version(tmp_path: Path) -> None:
    """Two processes publish one name 4 times each: 8 distinct complete versions, pointer on one of them."""
    root = tmp_path / "store"
    children = [publish_in_child(root, make_adapter(tmp_path / m, m), "x", times=4) for m in ("p", "q")]
    assert [c.wait(300) for c in children] == [0, 0]
    store = AdapterStore(root)
    assert store.versions("x") == list(range(1, 9))
    found = sorted(weights(store, f"x@{v}") for v in range(1, 9))
    assert found == [b"weights-p"] * 4 + [b"weights-q"] * 4
    assert store.current("x") == 8
