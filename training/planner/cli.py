"""`python -m training plan`: per-GPU memory for a fine-tuning setup, whether it fits, and what would.

    python -m training plan --model llama-2-70b --method qlora --gpus 2 --gpu-memory-gb 40 --zero 3 \\
        --seq-len 2048 --micro-batch 2 --lora-r 8 --gradient-checkpointing [--json]
"""

from __future__ import annotations

import argparse
from typing import Any

from core.cli import add_json_flag, emit
from training.planner.model import ALLOCATOR_SLACK, METHODS, OFFLOADS, PlanSpec, estimate
from training.planner.search import describe, recommend

LABELS = {
    "weights_frozen": "frozen weights (NF4 or 16-bit)",
    "weights": "weights (trainable, 16-bit)",
    "quant_constants": "NF4 quantization constants",
    "lora_weights": "LoRA weights",
    "gradients": "gradients",
    "optimizer_states": "optimizer states (fp32 master, m, v)",
    "activations": "activations",
    "logits": "logits + loss (peak at backward start)",
    "zero3_gather_buffers": "ZeRO-3 gather/prefetch buffers",
    "dequant_buffer": "NF4 dequantization buffer",
    "grad_buckets": "gradient reduce buckets",
    "load_temp": "temporary at load (one 16-bit tensor)",
    "save_temp": "temporary at save (gathered layer)",
    "allocator_slack": f"allocator fragmentation ({ALLOCATOR_SLACK:.0%})",
    "cuda_context": "CUDA context + NCCL",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="local model folder, known name (llama-2-70b) or hub id")
    p.add_argument("--method", choices=METHODS, default="qlora")
    p.add_argument("--gpus", type=int, required=True, help="number of GPUs (data-parallel ranks)")
    p.add_argument("--gpu-memory-gb", type=float, required=True, help="memory of one GPU in GB (e.g. 80)")
    p.add_argument("--zero", type=int, choices=(0, 2, 3), default=3, help="DeepSpeed ZeRO stage (default 3)")
    p.add_argument("--offload", choices=OFFLOADS, default="none")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument(
        "--lora-dropout", type=float, default=0.05, help="0 stores no dropout copies (default 0.05)"
    )
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument(
        "--load-in-4bit", action="store_true", help="4-bit base weights (implied by --method qlora)"
    )
    p.add_argument("--cpu-memory-gb", type=float, default=None, help="host RAM in total; checked when given")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: no CUDA context terms")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    add_json_flag(p)
    return p


def render(result: dict[str, Any]) -> str:
    s = result["spec"]
    lines = [
        f"{result['model']}: {s['method']}, {s['gpus']} x {s['gpu_memory_gb']:g} GB, ZeRO-{s['zero']}, "
        f"offload {s['offload']}, seq {s['seq_len']}, micro-batch {s['micro_batch']}, "
        f"checkpointing {'on' if s['gradient_checkpointing'] else 'off'}",
        f"parameters {result['params']['total'] / 1e9:.2f}B, trainable {result['params']['trainable'] / 1e6:,.1f}M",
        "",
        f"{'per GPU':<44}{'GB':>9}",
    ]
    lines += [f"  {LABELS.get(k, k):<42}{v:>9.2f}" for k, v in result["breakdown"].items() if v]
    act = result["activations"]
    lines += [
        f"  (activations with / without checkpointing: {act['with_checkpointing']:.2f} / "
        f"{act['without_checkpointing']:.2f} GB)",
        "phase peaks: " + ", ".join(f"{k} {v:.2f}" for k, v in result["phases"].items()),
        f"{'per-GPU peak (' + result['peak_phase'] + ')':<44}{result['per_gpu_gb']:>9.2f}",
        f"{'host RAM (all ranks)':<44}{result['cpu_ram_gb']:>9.2f}   "
        + ", ".join(f"{k} {v:.1f}" for k, v in result["cpu_breakdown"].items()),
        "",
        f"fits: {'yes' if result['fits'] else 'NO'} ({result['per_gpu_gb']:.1f} of {s['gpu_memory_gb']:g} GB)",
        f"recommended (cheapest that fits): {describe(result['recommendation'])}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = PlanSpec(
        model=args.model,
        method=args.method,
        gpus=args.gpus,
        gpu_memory_gb=args.gpu_memory_gb,
        zero=args.zero,
        offload=args.offload,
        seq_len=args.seq_len,
        micro_batch=args.micro_batch,
        lora_r=args.lora_r,
        gradient_checkpointing=args.gradient_checkpointing,
        lora_dropout=args.lora_dropout > 0,
        device=args.device,
        precision=args.precision,
        cpu_memory_gb=args.cpu_memory_gb,
        load_in_4bit=True if args.load_in_4bit else None,
    )
    result = estimate(spec).to_dict()
    result["recommendation"] = recommend(spec)
    emit(result, args.json, render)
    return 0
