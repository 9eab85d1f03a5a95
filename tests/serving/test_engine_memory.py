"""KV cache in bytes on CPU: the same setting on every machine, and a clear error before the engine starts."""

from __future__ import annotations

import pytest

from core.errors import UserError
from serving.config import ModelConfig
from serving.engine_memory import GIB, NodeMemory, check_cpu_engine_memory, engine_node_memory, kv_cache_bytes


def test_cpu_default_is_bytes_and_gpu_default_is_the_fraction() -> None:
    assert kv_cache_bytes(None, gpu=False) == 1 * GIB
    assert kv_cache_bytes(None, gpu=True) is None  # gpu_memory_utilization sizes it
    assert kv_cache_bytes(0.25, gpu=False) == GIB // 4 and kv_cache_bytes(2, gpu=True) == 2 * GIB


def test_engine_args_carry_bytes_not_a_fraction(tiny_model_dir) -> None:
    from serving.llm import engine_args

    cfg = ModelConfig(path=str(tiny_model_dir), kv_cache_gib=0.25, gpu_memory_utilization=0.05)
    args = engine_args(cfg, gpu=False)
    assert args.kv_cache_memory_bytes == GIB // 4
    assert args.dtype in ("bfloat16", "float32")  # 'auto' resolved for this CPU


def test_too_big_a_cache_is_refused_before_the_engine_starts(tiny_model_dir) -> None:
    """The real node this process runs on: no machine of this kind has 4 TiB free."""
    from serving.llm import engine_args

    with pytest.raises(UserError) as err:
        engine_args(ModelConfig(path=str(tiny_model_dir), kv_cache_gib=4096), gpu=False)
    msg = str(err.value)
    node = engine_node_memory()
    assert msg.startswith("model.kv_cache_gib:") and f"NUMA node {node.node}" in msg and "GiB free" in msg


@pytest.mark.parametrize(
    ("available_gib", "ok"),
    [(8.0, True), (1.4, True), (1.35, False), (0.5, False)],  # need: 1 cache + 0.125 weights + 0.25 headroom
)
def test_the_check_counts_weights_cache_and_headroom(tmp_path, available_gib: float, ok: bool) -> None:
    with open(tmp_path / "model.safetensors", "wb") as f:  # 0.125 GiB of "weights" (a sparse file)
        f.truncate(GIB // 8)
    node = NodeMemory(node=1, total=16 * GIB, available=int(available_gib * GIB))
    if ok:
        check_cpu_engine_memory(GIB, str(tmp_path), node)
    else:
        with pytest.raises(UserError, match="NUMA node 1"):
            check_cpu_engine_memory(GIB, str(tmp_path), node)
