"""LoRA on vLLM's CPU platform: one GEMM per adapter in a batch, and base-model tokens left alone.

vLLM's CPU LoRA ops (`vllm.lora.ops.torch_ops`, called by `PunicaWrapperCPU`) have two problems this replaces:

- Speed: they gather a copy of the adapter weights for every token (`weights[indices]`) and batch-einsum, so a
  900-token prefill through one projection moves 900 x rank x width floats first: 47 ms against 1.1 ms for one
  GEMM, while the base layer's own GEMM takes 8.9 ms (`benchmarks/lora_ops_bench.py`).
- Correctness: a base-model token carries index -1, which indexes the *last* adapter slot; a base request
  batched next to an adapter request silently gets that adapter's delta (vllm-project/vllm#48421, open in the
  vLLM this project pins). Here -1 tokens get no delta, as vLLM's GPU kernels do.

Registered as a vLLM general plugin (pyproject: entry point group `vllm.general_plugins`), so vLLM runs
`register()` in every process it starts, the engine core included. `DE_LORA_CPU_OPS=vllm` keeps vLLM's own ops.
The arithmetic is a torch custom op so a compiled model graph treats it as one opaque call.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

ENV = "DE_LORA_CPU_OPS"
_OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice", "sgmv_shrink", "sgmv_expand", "sgmv_expand_slice")


@torch.library.custom_op("domain_expert::lora_grouped_mm", mutates_args=())
def grouped_mm(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """inputs [T, i] times the adapter each token names (weights [L, (1,) o, i], indices [T]) -> [T, o].

    One GEMM per distinct adapter in the batch; tokens with a negative index (base model) get zeros."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    ids = torch.unique(indices).tolist()
    if len(ids) == 1 and ids[0] >= 0:  # the common case: one adapter for every token
        return inputs @ weights[ids[0]].to(inputs.dtype).T
    out = inputs.new_zeros(inputs.shape[0], weights.shape[1])
    for idx in ids:
        if idx < 0:
            continue
        rows = (indices == idx).nonzero().squeeze(1)
        out.index_copy_(0, rows, inputs.index_select(0, rows) @ weights[idx].to(inputs.dtype).T)
    return out


@grouped_mm.register_fake
def _grouped_mm_shape(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return inputs.new_empty(inputs.shape[0], weights.shape[-2])


def _delta(
    inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    if inputs.shape[0] != indices.shape[0]:  # vLLM's einsum would reject this too; say which op and shapes
        raise ValueError(f"LoRA op: {inputs.shape[0]} tokens but {indices.shape[0]} adapter indices")
    return grouped_mm(inputs.to(dtype), weights, indices)


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    """output[:, :rank] = scaling * inputs @ A[index].T (vLLM's signature and write pattern)."""
    outputs = _delta(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    """output[:, :width] (+)= inputs @ B[index].T, with vLLM's row limit and padding rule."""
    outputs = _delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    common = min(outputs.shape[1], output_tensor.shape[1])  # adapter and model may pad differently
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    """output[:, offset:offset+size] (+)= inputs @ B[index].T (one slice of a merged projection)."""
    outputs = _delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs


def _per_token(lora_indices_tensor: torch.Tensor, seq_len_tensor: torch.Tensor) -> torch.Tensor:
    """Prefill metadata (one index per sequence) as one index per token."""
    return torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)


def sgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    scaling: float,
) -> None:
    """Prefill shrink: vLLM's signature; the sequence metadata past seq_len is not needed here."""
    indices = _per_token(lora_indices_tensor, seq_len_tensor)
    bgmv_shrink(inputs, lora_a_weights, output_tensor, indices, scaling)


def sgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    add_inputs: bool = False,
) -> None:
    """Prefill expand (vLLM's signature)."""
    indices = _per_token(lora_indices_tensor, seq_len_tensor)
    bgmv_expand(inputs, lora_b_weights, output_tensor, indices, add_inputs)


def sgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = False,
) -> None:
    """Prefill expand into one slice (vLLM's signature)."""
    indices = _per_token(lora_indices_tensor, seq_len_tensor)
    bgmv_expand_slice(inputs, lora_b_weights, output_tensor, indices, slice_offset, slice_size, add_inputs)


def enabled() -> bool:
    """Whether this process should use these ops (the default) rather than vLLM's (`DE_LORA_CPU_OPS=vllm`)."""
    value = os.environ.get(ENV, "grouped")
    if value not in ("grouped", "vllm"):
        raise ValueError(f"{ENV}={value!r}: use 'grouped' (the default) or 'vllm'")
    return value == "grouped"


def register() -> bool:
    """vLLM general plugin: on the CPU platform, point PunicaWrapperCPU at these ops. Safe to call repeatedly;
    returns whether they are in use in this process."""
    if not enabled():
        return False
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():  # GPUs use vLLM's Triton kernels, which are fine
        return False
    from vllm.lora.punica_wrapper import punica_cpu

    for name in _OPS:
        setattr(punica_cpu, name, globals()[name])
    return True


def plugin_installed() -> bool:
    """Whether vLLM will find `register` in the processes it starts: the project must be pip-installed (a Ray
    working_dir alone carries no entry points)."""
    from importlib.metadata import entry_points

    return any(ep.value == f"{__name__}:register" for ep in entry_points(group="vllm.general_plugins"))


def configure(choice: str, cpu: bool) -> None:
    """Apply a deployment's `model.lora_cpu_ops` to this process and the engine processes it starts, warning
    when the grouped ops were asked for on a CPU but vLLM cannot load them."""
    os.environ[ENV] = choice
    if cpu and choice == "grouped" and not plugin_installed():
        log.warning(
            "model.lora_cpu_ops is 'grouped' but the domain-expert package is not installed here, so vLLM's "
            "engine cannot load serving.lora_cpu_ops: on CPU, LoRA uses vLLM's own ops (slower; base requests "
            "batched with adapter requests get an adapter's delta, vllm#48421). Install the project: pip install ."
        )
