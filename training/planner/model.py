"""The memory arithmetic: what one rank holds while loading, training and saving a LoRA/QLoRA/full fine-tune.

Every term is counted from dimensions, bytes per element and DeepSpeed's sharding rules; the few constants that
cannot be derived (CUDA context, allocator slack) are named below with their reasoning. Sources:
- Mixed-precision Adam costs 2 + 2 + 12 bytes per trainable parameter (16-bit weight and gradient; fp32 master,
  momentum, variance): ZeRO, Rajbhandari et al. 2020, https://arxiv.org/abs/1910.02054 (section 3.1).
- Stored activations per token per layer follow Korthikanti et al. 2022, "Reducing Activation Recomputation in
  Large Transformer Models", https://arxiv.org/abs/2205.05198 (section 4.1: 34*s*b*h + 5*a*s^2*b bytes for a
  GPT layer), rewritten for Llama blocks (RMSNorm, GQA, SwiGLU) with flash attention, which stores no s^2 scores
  (Dao et al. 2022, https://arxiv.org/abs/2205.14135). See `layer_activation_bytes`.
- NF4 with double quantization: 4 bits per weight, 8-bit absmax per 64-weight block, fp32 absmax per 256 blocks:
  QLoRA, Dettmers et al. 2023, https://arxiv.org/abs/2305.14314 (section 3, 0.127 bits/param of constants).
- ZeRO-3 gather sizes follow DeepSpeed's stage3 settings as Hugging Face fills the "auto" values
  (stage3_prefetch_bucket_size = 0.9 * hidden^2, reduce_bucket_size = hidden^2),
  https://huggingface.co/docs/transformers/deepspeed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from core.errors import UserError
from training.planner.architectures import Arch, resolve

# GB here means GiB (2**30 bytes), as nvidia-smi, torch.cuda and the published figures report memory: an
# "80GB" A100/H100 has 80 GiB.
GB = 2**30
METHODS = ("lora", "qlora", "full")
OFFLOADS = ("none", "optimizer", "params")
ZERO_STAGES = (0, 2, 3)
# Assumptions that cannot be derived from dimensions (stated in README.md, planner section):
CUDA_CONTEXT_GB = 1.0  # CUDA context + cuBLAS workspaces as nvidia-smi counts them on A100/H100 class GPUs
NCCL_GB = 0.5  # NCCL communicator buffers per rank when more than one GPU takes part
ALLOCATOR_SLACK = 0.10  # PyTorch caching allocator: reserved exceeds allocated (fragmentation) by ~10%
CPU_PROCESS_GB = 3.0  # per-rank host process: Python, torch, CUDA host libraries, DeepSpeed
NF4_BYTES = 0.5 + (8 / 64 + 32 / (64 * 256)) / 8  # 4-bit weight + double-quantized constants, per weight
NF4_CONSTANT_BYTES = (8 / 64 + 32 / (64 * 256)) / 8


@dataclass(frozen=True)
class PlanSpec:
    """One fine-tuning setup to plan; invalid combinations raise UserError (exit code 2) at construction."""

    model: str
    method: str = "qlora"
    gpus: int = 1
    gpu_memory_gb: float = 80.0
    zero: int = 3
    offload: str = "none"
    seq_len: int = 2048
    micro_batch: int = 1
    lora_r: int = 8
    gradient_checkpointing: bool = False
    lora_dropout: bool = True  # PEFT stores dropout(x) per adapter when lora_dropout > 0
    device: str = "cuda"  # "cpu": no CUDA context/allocator terms (used to check against measured RSS)
    precision: str = "bf16"  # "fp32": plain fp32 weights and torch AdamW (CPU training)
    cpu_memory_gb: float | None = None  # host RAM available in total; None = not checked
    load_in_4bit: bool | None = None  # explicit quantization request; must agree with the method

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"method must be one of {', '.join(METHODS)} (got {self.method!r})")
        if self.load_in_4bit and self.method == "full":
            problems.append(
                "4-bit (QLoRA) weights cannot be fully fine-tuned; use --method qlora or drop 4-bit"
            )
        if self.load_in_4bit is False and self.method == "qlora":
            problems.append("--method qlora means 4-bit weights; use --method lora for 16-bit weights")
        if self.zero not in ZERO_STAGES:
            problems.append(f"zero must be one of 0, 2, 3 (got {self.zero})")
        if self.offload not in OFFLOADS:
            problems.append(f"offload must be one of {', '.join(OFFLOADS)} (got {self.offload!r})")
        elif self.offload == "params" and self.zero != 3:
            problems.append("offload=params needs ZeRO-3 (only stage 3 partitions parameters); use --zero 3")
        elif self.offload == "optimizer" and self.zero == 0:
            problems.append("offload=optimizer needs ZeRO-2 or ZeRO-3; use --zero 2")
        for name in ("gpus", "seq_len", "micro_batch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive integer (got {getattr(self, name)!r})")
        if self.method != "full" and (not isinstance(self.lora_r, int) or self.lora_r < 1):
            problems.append(f"lora_r must be a positive integer (got {self.lora_r!r})")
        if not isinstance(self.gpu_memory_gb, int | float) or not self.gpu_memory_gb > 0:
            problems.append(f"gpu_memory_gb must be positive (got {self.gpu_memory_gb})")
        if self.cpu_memory_gb is not None and (
            not isinstance(self.cpu_memory_gb, int | float) or not self.cpu_memory_gb > 0
        ):
            problems.append(f"cpu_memory_gb must be positive (got {self.cpu_memory_gb})")
        if self.device not in ("cuda", "cpu") or self.precision not in ("bf16", "fp32"):
            problems.append("device must be cuda|cpu and precision bf16|fp32")
        if problems:
            raise UserError("invalid plan: " + "; ".join(problems))

    def replace(self, **changes: Any) -> PlanSpec:
        return PlanSpec(**{**asdict(self), **changes})


@dataclass
class Estimate:
    """Per-GPU peak (the largest of the load, train and save phases), its parts, and host RAM."""

    spec: PlanSpec
    arch: Arch
    breakdown: dict[str, float]  # GB per GPU, each term once
    phases: dict[str, float]  # GB per GPU at the peak of each phase
    cpu_breakdown: dict[str, float]  # GB of host RAM, summed over all ranks
    activations: dict[str, float]  # GB per GPU with and without gradient checkpointing (for comparison)
    params: dict[str, int] = field(default_factory=dict)

    @property
    def per_gpu_gb(self) -> float:
        return round(max(self.phases.values()), 4)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda k: self.phases[k])

    @property
    def cpu_ram_gb(self) -> float:
        return round(sum(self.cpu_breakdown.values()), 4)

    @property
    def fits_gpu(self) -> bool:
        return self.per_gpu_gb <= self.spec.gpu_memory_gb

    @property
    def fits(self) -> bool:
        cpu_ok = self.spec.cpu_memory_gb is None or self.cpu_ram_gb <= self.spec.cpu_memory_gb
        return self.fits_gpu and cpu_ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.arch.name,
            "spec": asdict(self.spec),
            "params": self.params,
            "per_gpu_gb": self.per_gpu_gb,
            "gpu_memory_gb": self.spec.gpu_memory_gb,
            "fits": self.fits,
            "peak_phase": self.peak_phase,
            "phases": self.phases,
            "breakdown": self.breakdown,
            "activations": self.activations,
            "cpu_ram_gb": self.cpu_ram_gb,
            "cpu_breakdown": self.cpu_breakdown,
        }


def layer_activation_bytes(arch: Arch, spec: PlanSpec) -> float:
    """Bytes stored for backward per token in one decoder layer (no checkpointing), 16-bit activations.

    Llama block, tensors autograd keeps (h = hidden, k = kv width, i = MLP width; bf16 = 2 bytes/element):
      attention: layer input 2h, RMSNorm fp32 upcast + normalized 6h, its output 2h, q before/after RoPE 4h,
      k before/after RoPE 4k, v 2k, attention output 2h (flash attention keeps no s x s scores) = 16h + 6k;
      MLP: RMSNorm 6h, its output 2h, gate, up, SiLU(gate), product 8i = 8h + 8i. Total 24h + 6k + 8i
      (Korthikanti's GPT layer, with LayerNorm, GELU and a 4h MLP, comes to 34h). LoRA with dropout adds, per
      adapted linear, dropout(x) and its mask: 3 * in_features. fp32 training doubles everything.
    """
    h, i = arch.hidden, arch.intermediate
    kv = arch.kv_heads * arch.hd
    act = 24 * h + 6 * kv + 8 * i
    if spec.method != "full" and spec.lora_dropout:
        act += sum(3 * fi for _, fi, _ in arch.linears())
    return act * (2 if spec.precision == "fp32" else 1)


def backward_workspace_bytes(arch: Arch, spec: PlanSpec) -> float:
    """Per token: gradients of one layer's activations alive at once in backward (MLP grads + residual grads)."""
    return (4 * arch.hidden + 6 * arch.intermediate) * (2 if spec.precision == "fp32" else 1)


def estimate(spec: PlanSpec, arch: Arch | None = None) -> Estimate:
    """Plan one setup: per-GPU peak memory by phase, its parts, and host RAM (`arch` skips re-resolving)."""
    arch = arch or resolve(spec.model)
    n, tokens = spec.gpus, spec.seq_len * spec.micro_batch
    act_b = 4 if spec.precision == "fp32" else 2  # bytes of a weight/activation element
    z3, z2 = spec.zero == 3, spec.zero >= 2
    off_opt = spec.offload in ("optimizer", "params")
    off_par = spec.offload == "params"

    # Weights. QLoRA: NF4 linears, 16-bit embeddings/norms/lm_head. ZeRO-3 shards all of them (quant storage
    # bf16 makes packed 4-bit weights ordinary bf16 tensors); the quantization constants live in each
    # Params4bit's quant_state, not in a parameter, so every rank keeps all of them.
    if spec.method == "qlora":
        weights = arch.linear_params() * 0.5 + arch.other_params() * 2
        constants = arch.linear_params() * NF4_CONSTANT_BYTES
        layer_bytes = arch.layer_params() * 0.5
    else:
        weights = arch.total_params() * act_b
        constants = 0.0
        layer_bytes = arch.layer_params() * act_b
    trainable = arch.total_params() if spec.method == "full" else arch.lora_params(spec.lora_r)
    mixed = spec.precision == "bf16"
    w_tr, g_tr, o_tr = (2, 2, 12) if mixed else (4, 4, 8)  # ZeRO paper: 2 + 2 + 12 (K = 12) bytes per param
    if spec.method == "full":
        weights_gpu, lora_gpu = weights, 0.0
    else:
        weights_gpu, lora_gpu = weights, trainable * w_tr
    grads_gpu, opt_gpu = trainable * g_tr, trainable * o_tr
    if z3:
        weights_gpu, lora_gpu = weights_gpu / n, lora_gpu / n
    if z2:
        grads_gpu, opt_gpu = grads_gpu / n, opt_gpu / n
    cpu_state = 0.0
    # ZeRO-Offload (https://arxiv.org/abs/2101.06840): gradients stream to the host, fp32 states live there.
    if off_opt:
        cpu_state += trainable * (o_tr + 4)
        opt_gpu, grads_gpu = 0.0, 0.0  # only the reduce buckets (grad_buckets) stay on the GPU
    if off_par and spec.method == "qlora":
        # PEFT's DeepSpeed guide (caveat 3): ZeRO-3 + QLoRA with CPU offload uses *more* GPU memory than without,
        # so no GPU saving is credited for the 4-bit weights; the host still holds a copy.
        cpu_state += weights
    elif off_par:
        cpu_state += weights + (trainable * w_tr if spec.method != "full" else 0.0)
        weights_gpu, lora_gpu = 0.0, 0.0  # only the gathered layer (zero3_gather_buffers) is on the GPU

    # Activations (per GPU: each rank runs its own micro-batch). Checkpointing keeps each layer's input
    # (2h bytes/token) and recomputes one layer at a time in backward.
    layer_act = layer_activation_bytes(arch, spec) * tokens
    bwd_ws = backward_workspace_bytes(arch, spec) * tokens
    stored_ckpt = arch.layers * arch.hidden * act_b * tokens
    act_ckpt = stored_ckpt + layer_act + bwd_ws
    act_full = arch.layers * layer_act + bwd_ws
    activations = act_ckpt if spec.gradient_checkpointing else act_full
    stored = stored_ckpt if spec.gradient_checkpointing else arch.layers * layer_act
    # Logits: 16-bit logits, their fp32 upcast in the loss, the saved log-softmax and the fp32 gradient.
    logits = tokens * arch.vocab * (act_b + 4 + 4 + 4)

    # ZeRO-3 gathers one layer (plus the prefetch bucket) before using it; lm_head is gathered whole for the
    # logits. That stays far below stage3_max_live_parameters (default 1e9 elements), which only caps it.
    # QLoRA dequantizes one linear at a time to bf16 for the matmul.
    prefetch = 0.9 * arch.hidden**2 * 2 if z3 else 0.0
    gather = (max(layer_bytes, arch.vocab * arch.hidden * 2) + prefetch) if z3 else 0.0
    dequant = arch.largest_linear() * 2 if spec.method == "qlora" else 0.0
    buckets = min(trainable, arch.hidden**2) * 2 * (2 if n > 1 and spec.zero > 0 else 0)
    cuda = 0.0 if spec.device == "cpu" else CUDA_CONTEXT_GB * GB + (NCCL_GB * GB if n > 1 else 0.0)
    slack = 0.0 if spec.device == "cpu" else ALLOCATOR_SLACK

    states = weights_gpu + constants + lora_gpu + grads_gpu + opt_gpu
    # The logits peak (start of backward) and one layer's recompute peak never coexist: take the larger.
    train_dyn = stored + max(activations - stored, logits) + gather + dequant + buckets
    # Load: one full-size tensor at a time arrives in 16-bit before it is quantized/sharded.
    largest = max(arch.largest_linear(), arch.vocab * arch.hidden) * 2
    load_dyn = largest * (1.25 if spec.method == "qlora" else 1.0)
    # Save: activations are freed; the gather of one full layer (16-bit save) plus all trainable weights.
    save_dyn = (layer_bytes + (trainable * w_tr if spec.method != "full" else 0.0)) if z3 else 0.0
    # The optimizer does not exist yet while loading. transformers skips zero.Init for quantized models, so under
    # QLoRA + ZeRO-3 every rank holds the whole 4-bit base until deepspeed.initialize partitions it.
    loaded = (weights if (z3 and spec.method == "qlora") else weights_gpu) + constants + lora_gpu

    def total(base: float, dyn: float) -> float:
        return round(((base + dyn) * (1 + slack) + cuda) / GB, 4)

    breakdown = {
        "weights_frozen" if spec.method != "full" else "weights": weights_gpu,
        "quant_constants": constants,
        "lora_weights": lora_gpu,
        "gradients": grads_gpu,
        "optimizer_states": opt_gpu,
        "activations": activations,
        "logits": logits,
        "zero3_gather_buffers": gather,
        "dequant_buffer": dequant,
        "grad_buckets": buckets,
        "load_temp": load_dyn,
        "save_temp": save_dyn,
        "allocator_slack": (states + train_dyn) * slack,
        "cuda_context": cuda,
    }
    checkpoint_gather = arch.total_params() * 2 if spec.method == "full" else trainable * 4
    cpu_breakdown = {
        "processes": CPU_PROCESS_GB * GB * n if spec.device == "cuda" else 0.0,
        "offloaded_states": cpu_state,
        # Each rank materializes one 16-bit layer and the embedding while reading mmap'd safetensors.
        "loading": (arch.layer_params() + arch.vocab * arch.hidden) * 2 * n,
        "checkpoint_gather": checkpoint_gather,
    }
    return Estimate(
        spec=spec,
        arch=arch,
        breakdown={k: round(v / GB, 6) for k, v in breakdown.items()},
        phases={
            "load": total(loaded, load_dyn),
            "train": total(states, train_dyn),
            "save": total(states, save_dyn),
        },
        cpu_breakdown={k: round(v / GB, 6) for k, v in cpu_breakdown.items()},
        activations={
            "with_checkpointing": round(act_ckpt / GB, 6),
            "without_checkpointing": round(act_full / GB, 6),
        },
        params={
            "total": arch.total_params(),
            "trainable": trainable,
            "lora": 0 if spec.method == "full" else trainable,
        },
    )
