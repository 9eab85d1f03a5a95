"""Recommendation (cheapest setup that fits) and the launcher's preflight check.

"Cheapest" means fewest GPU-hours per token. Data parallelism scales about linearly, so GPU count does not change
GPU-hours; step time does. Gradient checkpointing recomputes the forward pass, ~4/3 of the compute (Chen et al.
2016, https://arxiv.org/abs/1604.06174; Korthikanti et al. 2022). Host offload is bound by PCIe transfers; its
factors below are rough assumptions, not measurements, used only to rank setups. Ties go to fewer GPUs (less
hardware to hold), then the larger micro-batch (up to the one asked for), then the lower ZeRO stage. A recommended setup must fit
in 90% of GPU memory.
"""

from __future__ import annotations

from typing import Any

from core.errors import UserError
from training.planner.architectures import resolve
from training.planner.model import Estimate, PlanSpec, estimate

MAX_GPUS = 64
SLOWDOWN = {"none": 1.0, "optimizer": 2.0, "params": 4.0}  # assumed relative step time of host offload
RECOMPUTE = 4 / 3
HEADROOM = 0.9  # recommendations keep 10% spare: the planner under-predicts published figures by 9-12%
_VERB = {"load": "loading", "train": "training", "save": "saving"}
VALID = [(0, "none"), (2, "none"), (2, "optimizer"), (3, "none"), (3, "optimizer"), (3, "params")]


def _micro_batches(requested: int) -> list[int]:
    out, mb = [], requested
    while mb >= 1:
        out.append(mb)
        mb //= 2
    return out


def _summary(est: Estimate, base: PlanSpec) -> dict[str, Any]:
    s = est.spec
    keys = ("gpus", "zero", "offload", "micro_batch", "gradient_checkpointing")
    return {
        "gpus": s.gpus,
        "zero": s.zero,
        "offload": s.offload,
        "micro_batch": s.micro_batch,
        "gradient_checkpointing": s.gradient_checkpointing,
        "per_gpu_gb": est.per_gpu_gb,
        "gpu_memory_gb": s.gpu_memory_gb,
        "cpu_ram_gb": est.cpu_ram_gb,
        "relative_step_cost": round(step_cost(s), 2),
        "changed": [k for k in keys if getattr(s, k) != getattr(base, k)],
    }


def recommend(spec: PlanSpec, max_gpus: int = MAX_GPUS) -> dict[str, Any] | None:
    """The cheapest (gpus, zero, offload, micro_batch, checkpointing) for this model/method/GPU size that fits."""
    arch = resolve(spec.model)
    best: tuple[tuple, PlanSpec] | None = None
    for gpus in range(1, max(max_gpus, spec.gpus) + 1):
        for zero, offload in VALID:
            if gpus == 1 and zero > 0 and offload == "none":
                continue  # ZeRO on one GPU shards nothing: same memory as stage 0, slower
            for ckpt in {
                spec.gradient_checkpointing,
                True,
            }:  # never turn off checkpointing that was asked for
                for mb in _micro_batches(spec.micro_batch):
                    cand = spec.replace(
                        gpus=gpus, zero=zero, offload=offload, micro_batch=mb, gradient_checkpointing=ckpt
                    )
                    est = estimate(cand, arch)
                    if not est.fits or est.per_gpu_gb > HEADROOM * cand.gpu_memory_gb:
                        continue
                    key = (step_cost(cand), gpus, -mb, zero)
                    if best is None or key < best[0]:
                        best = (key, cand)
                    break  # smaller micro-batches only rank lower
    return None if best is None else _summary(estimate(best[1], arch), spec)


def step_cost(spec: PlanSpec) -> float:
    """GPU-hours per token relative to no offload, no recompute (data parallelism scales ~linearly)."""
    return SLOWDOWN[spec.offload] * (RECOMPUTE if spec.gradient_checkpointing else 1.0)


def describe(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return f"nothing fits on up to {MAX_GPUS} GPUs of this size; use larger GPUs or --method qlora"
    return (
        f"{rec['gpus']} GPU(s), ZeRO-{rec['zero']}, offload {rec['offload']}, micro-batch {rec['micro_batch']}, "
        f"gradient checkpointing {'on' if rec['gradient_checkpointing'] else 'off'} "
        f"({rec['per_gpu_gb']:.1f} GB per GPU, {rec['cpu_ram_gb']:.0f} GB host RAM)"
    )


def preflight(spec: PlanSpec, force: bool = False) -> Estimate:
    """Refuse a setup that will not fit, with the numbers and a setup that does, unless forced."""
    est = estimate(spec)
    if est.fits or force:
        return est
    s = spec
    need = f"needs {est.per_gpu_gb:.1f} GB per GPU (peak while {_VERB[est.peak_phase]})"
    have = f"{s.gpu_memory_gb:.1f} GB available"
    if est.fits_gpu:  # GPU fits, host RAM does not
        need = f"needs {est.cpu_ram_gb:.0f} GB host RAM"
        have = f"{s.cpu_memory_gb:.0f} GB available"
    raise UserError(
        f"memory preflight: {est.arch.name} {s.method} on {s.gpus} GPU(s), ZeRO-{s.zero}, offload {s.offload}, "
        f"seq {s.seq_len}, micro-batch {s.micro_batch} {need} but {have}; "
        f"recommended: {describe(recommend(spec))}; force to run anyway"
    )
