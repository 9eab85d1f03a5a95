"""Training throughput on the tiny model, every variant measured in this one run on this machine:
a plain single-process PEFT loop (no Ray, no DeepSpeed) vs this project with 1 and 2 Ray Train workers
(DeepSpeed ZeRO-3), for LoRA and QLoRA. Same data, sequence length, micro-batch and steps everywhere.

    .venv/bin/python benchmarks/training_bench.py [--steps 20] [--json]

tokens/s counts non-padding tokens trained per second over all workers, start-up excluded (first step too
for the plain loop; the project's number is its own per-step timing summed over all steps).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from core.cli import add_json_flag, emit, log, run_cli  # noqa: E402
from core.storage import REPO_ROOT  # noqa: E402

CONFIG = REPO_ROOT / "training" / "configs" / "tiny-qlora.yaml"


def plain_peft(method: str, model_dir: str, data: str, steps: int, seq: int, mb: int) -> dict:
    """The reference: a single-process transformers + PEFT loop with a torch AdamW."""
    import pandas as pd
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from training.data import collate, tokenize_batch

    lines = [x for x in Path(data).read_text().splitlines() if x.strip()]
    tok = tokenize_batch(
        pd.DataFrame({"__line": lines}), tokenizer=model_dir, fmt="messages", max_len=seq, text_field="text"
    )
    tok = tok[tok["error"] == ""]
    kwargs = {"dtype": torch.bfloat16}
    if method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16,
        )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    pad = model.config.pad_token_id or 0
    tokens, seconds, losses = 0, 0.0, []
    for step in range(steps + 1):
        i = (step * mb) % max(1, len(tok) - mb)
        batch = collate(
            {"input_ids": list(tok["input_ids"][i : i + mb]), "labels": list(tok["labels"][i : i + mb])}, pad
        )
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step:  # the first step warms up kernels and allocators
            seconds += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
        losses.append(float(loss))
    return {
        "tokens_per_s": tokens / seconds,
        "initial_loss": losses[0],
        "final_loss": losses[-1],
        "wall_s": None,
    }


def project(
    method: str, workers: int, model_dir: str, data: str, steps: int, seq: int, mb: int, out: str
) -> dict:
    from training.config import TrainConfig
    from training.launch import check, train

    name = f"bench-{method}-{workers}w"
    cfg = TrainConfig.from_file(CONFIG, [
        f"model.path={model_dir}", f"model.method={method}", f"data.path={data}", f"data.max_seq_len={seq}",
        "data.validation_fraction=0", f"optim.max_steps={steps}", f"optim.micro_batch_size={mb}", "optim.lr=0.003",
        f"scaling.num_workers={workers}", f"run.name={name}", f"run.storage_path={out}/runs",
        f"run.checkpoint_every={steps}", f"output.adapter_name={name}", f"output.store={out}/adapters",
    ])  # fmt: skip
    t0 = time.perf_counter()
    r = train(cfg, check(cfg))
    return {
        **{k: r[k] for k in ("tokens_per_s", "initial_loss", "final_loss")},
        "wall_s": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per variant")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--data", default=str(REPO_ROOT / "examples" / "instructions.jsonl"))
    add_json_flag(p)
    args = p.parse_args(argv)
    from training.tiny import build

    with tempfile.TemporaryDirectory(prefix="train-bench-") as out:
        os.environ["DE_DATA_DIR"] = out
        model_dir = build(Path(out) / "tiny-llama")["path"]
        rows = []
        for method in ("lora", "qlora"):
            plan = [
                ("plain PEFT (1 process)", 1, None),
                ("project, 1 worker", 1, 1),
                ("project, 2 workers", 2, 2),
            ]
            base = None
            for label, workers, ray_workers in plan:
                log(f"bench: {label}, {method}")
                if ray_workers is None:
                    r = plain_peft(method, model_dir, args.data, args.steps, args.seq_len, args.micro_batch)
                else:
                    r = project(
                        method,
                        ray_workers,
                        model_dir,
                        args.data,
                        args.steps,
                        args.seq_len,
                        args.micro_batch,
                        out,
                    )
                base = base or r["tokens_per_s"]
                rows.append({"variant": label, "method": method, "workers": workers, "steps": args.steps,
                             **r, "vs_plain": r["tokens_per_s"] / base})  # fmt: skip
        by = {(r["method"], r["variant"]): r["tokens_per_s"] for r in rows}
        qlora_vs_lora = {v: by[("qlora", v)] / by[("lora", v)] for (_, v) in by if ("lora", v) in by}
    result = {"rows": rows, "qlora_over_lora": qlora_vs_lora, "cpu_only": True, "steps": args.steps,
              "seq_len": args.seq_len, "micro_batch": args.micro_batch}  # fmt: skip
    emit(result, args.json, render)
    return 0


def render(r: dict) -> str:
    lines = [
        "| variant | method | workers | tokens/s | vs plain (same method) | loss first -> last |",
        "|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['variant']} | {x['method']} | {x['workers']} | {x['tokens_per_s']:,.0f} | {x['vs_plain']:.2f}x "
            f"| {x['initial_loss']:.2f} -> {x['final_loss']:.2f} |"
        )
    lines.append("")
    lines += [f"QLoRA / LoRA throughput, {v}: {q:.2f}" for v, q in r["qlora_over_lora"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_cli(main))
