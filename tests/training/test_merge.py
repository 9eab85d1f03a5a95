"""`python -m training merge` folds an adapter only into the base it was trained on (unless --force)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.adapter_store import AdapterStore
from core.errors import UserError
from core.fingerprint import model_fingerprint
from training.merge import main as merge_main
from training.tiny import random_adapter


@pytest.fixture(scope="module")
def store(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AdapterStore:
    """One real adapter of the tiny model, published twice: with its base's fingerprint and with another's."""
    work = tmp_path_factory.mktemp("merge")
    src = random_adapter(tiny_model_dir, work / "src", seed=3, rank=4)
    s = AdapterStore(work / "store")
    s.publish(
        src, "own-v1", {"base_model": str(tiny_model_dir)}, base_fingerprint=model_fingerprint(tiny_model_dir)
    )
    s.publish(src, "foreign-v1", {"base_model": "smollm2-135m-instruct"}, base_fingerprint="other-base-0123")
    return s


def _merge(store: AdapterStore, name: str, out: Path, *extra: str) -> int:
    return merge_main(["--adapter", name, "--store", str(store.root), "--out", str(out), "--json", *extra])


def test_merge_refuses_another_base(store: AdapterStore, tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        _merge(store, "foreign-v1", tmp_path / "out")
    msg = str(info.value)
    assert "foreign-v1" in msg and "smollm2-135m-instruct" in msg and str(tiny_model_dir) in msg
    assert "--force" in msg
    assert not (tmp_path / "out").exists()  # refused before loading or writing anything


def test_merge_refuses_an_adapter_without_fingerprint(tiny_model_dir: Path, tmp_path: Path) -> None:
    src = random_adapter(tiny_model_dir, tmp_path / "src", seed=4, rank=4)  # a bare folder: nothing recorded
    with pytest.raises(UserError, match="no base fingerprint"):
        merge_main(["--adapter", str(src), "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("name, extra", [("own-v1", ()), ("foreign-v1", ("--force",))])
def test_merge_own_base_or_forced(
    store: AdapterStore, tmp_path: Path, name: str, extra: tuple[str, ...]
) -> None:
    assert _merge(store, name, tmp_path / "out", *extra) == 0
    assert (tmp_path / "out" / "config.json").is_file()
    assert list((tmp_path / "out").glob("*.safetensors"))
