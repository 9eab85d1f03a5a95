"""The adapter store publishes atomically and only ever exposes complete, safetensors adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.adapter_store import AdapterBaseMismatch, AdapterStore, check_compatible, check_name
from core.errors import UserError


def make_adapter(path: Path, marker: str = "v1") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA", "marker": marker}))
    (path / "adapter_model.safetensors").write_bytes(b"weights-" + marker.encode())
    return path


def test_publish_list_get(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    info = store.publish(make_adapter(tmp_path / "src"), "support-v1", {"base_model": "tiny"})
    assert info.base_model == "tiny" and info.metadata["name"] == "support-v1"
    assert [a.name for a in store.list()] == ["support-v1"]
    assert (store.local_path("support-v1") / "adapter_model.safetensors").read_bytes() == b"weights-v1"


def test_refuses_to_replace_unless_asked(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    store.publish(make_adapter(tmp_path / "a", "v1"), "x", {})
    with pytest.raises(UserError, match="already exists"):
        store.publish(make_adapter(tmp_path / "b", "v2"), "x", {})
    store.publish(make_adapter(tmp_path / "b", "v2"), "x", {}, overwrite=True)
    assert (store.local_path("x") / "adapter_model.safetensors").read_bytes() == b"weights-v2"
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [".locks", "x"]  # no staging or trash


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "", "x" * 65, "/abs", "a..b", "sp ace"])
def test_names_cannot_escape_the_store(name: str) -> None:
    with pytest.raises(UserError, match="invalid adapter name"):
        check_name(name)


def test_half_published_adapter_is_invisible(tmp_path: Path) -> None:
    """A crash mid-publish leaves only a hidden staging folder (or a folder without COMPLETE): never listed."""
    store = AdapterStore(tmp_path / "store")
    make_adapter(tmp_path / "store" / ".staging-y-1234")
    make_adapter(tmp_path / "store" / "partial")  # no COMPLETE marker: e.g. a copy that died
    assert store.list() == []
    with pytest.raises(UserError, match="not found"):
        store.get("partial")


def test_pickled_weights_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    (src / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(UserError, match="pickled weights are not accepted"):
        AdapterStore(tmp_path / "store").publish(src, "p", {})


def test_fingerprint_recorded_and_checked(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    info = store.publish(
        make_adapter(tmp_path / "src"), "a", {"base_model": "tiny"}, base_fingerprint="fp-tiny"
    )
    assert info.base_fingerprint == "fp-tiny" and info.base_model == "tiny"
    assert (
        json.loads((tmp_path / "store" / "a" / "1" / "metadata.json").read_text())["base_fingerprint"] == "fp-tiny"
    )
    check_compatible(store.get("a"), "fp-tiny", "tiny")  # same base: no error
    with pytest.raises(AdapterBaseMismatch, match=r"'a' was trained on base 'tiny'.*served base 'smollm2'"):
        check_compatible(store.get("a"), "fp-smollm2", "smollm2")


def test_adapter_without_fingerprint_fits_no_base(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    store.publish(make_adapter(tmp_path / "src"), "old", {"base_model": "tiny"})
    assert store.get("old").base_fingerprint is None and not store.get("old").fits("fp-tiny")
    with pytest.raises(
        UserError, match=r"'old' was trained on 'tiny' but records no base fingerprint.*'tiny'"
    ):
        check_compatible(store.get("old"), "fp-tiny", "tiny")


@pytest.mark.parametrize("corrupt", [b"{not json", b"[1, 2]", b"\xff\xfe\x00binary"])
def test_corrupt_metadata_is_skipped_not_fatal(tmp_path: Path, corrupt: bytes) -> None:
    """One damaged adapter must not hide the others, nor break a server's /v1/models."""
    store = AdapterStore(tmp_path / "store")
    for name in ("a-good", "b-bad", "c-good"):
        store.publish(make_adapter(tmp_path / name), name, {"base_model": "tiny"}, base_fingerprint="fp")
    (tmp_path / "store" / "b-bad" / "1" / "metadata.json").write_bytes(corrupt)
    assert [a.name for a in store.list()] == ["a-good", "c-good"]
    adapters, problems = store.list_with_problems()
    assert [a.name for a in adapters] == ["a-good", "c-good"]
    assert list(problems) == ["b-bad"] and "metadata.json" in problems["b-bad"]
    with pytest.raises(UserError, match="metadata.json"):
        store.get("b-bad")  # asked for by name, it says what is wrong
