"""Checkpoints: the LoRA adapter (gathered from ZeRO-3 shards, never empty), per-rank optimizer state, the
scheduler and the data position, in one Ray Train checkpoint folder.

`engine.save_checkpoint` fails with ZeRO-3 + 4-bit on CPU (STACK.md) and would store the frozen base anyway,
so only the trainable parameters are saved. Every rank writes its own optimizer file into its local folder;
Ray Train merges all ranks' folders into one checkpoint.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
STATE = "train_state.json"
HISTORY = "history.jsonl"


def _trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def gathered_adapter_state(model) -> dict[str, torch.Tensor]:
    """Full LoRA tensors on every rank (a collective under ZeRO-3: all ranks must call it)."""
    import deepspeed
    from peft.utils import get_peft_model_state_dict

    params = [p for _, p in _trainable(model)]
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        state = get_peft_model_state_dict(model.module if hasattr(model, "module") else model)
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    empty = [k for k, v in state.items() if v.numel() == 0]
    if empty:
        raise RuntimeError(f"adapter tensors empty after gathering: {empty[:3]}")
    return state


def save_adapter(state: dict[str, torch.Tensor], adapter_config: dict[str, Any], out: Path) -> None:
    """Standard PEFT layout: adapter_config.json + adapter_model.safetensors (never pickle)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (out / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2))


def load_adapter_into(model, ckpt: Path) -> None:
    """Copy saved LoRA tensors into the (possibly ZeRO-3 partitioned) model; rank 0's copy wins."""
    import deepspeed
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(ckpt / ADAPTER_WEIGHTS))
    params = [p for _, p in _trainable(model)]
    with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
        set_peft_model_state_dict(model.module if hasattr(model, "module") else model, state)


def save_training_state(engine, scheduler, out: Path, rank: int, state: dict[str, Any]) -> None:
    """Per-rank optimizer partition (+ scheduler and data position on rank 0)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(engine.optimizer.state_dict(), out / f"optimizer_rank{rank}.pt")
    if rank == 0:
        torch.save(scheduler.state_dict(), out / "scheduler.pt")
        (out / STATE).write_text(json.dumps(state))


def load_training_state(engine, scheduler, ckpt: Path, rank: int, world: int) -> dict[str, Any]:
    """Restore optimizer (same world size only), scheduler and position; returns the saved train_state."""
    from core.cli import log

    state = json.loads((ckpt / STATE).read_text())
    opt_file = ckpt / f"optimizer_rank{rank}.pt"
    if state.get("world_size") == world and opt_file.exists():
        sd = torch.load(opt_file, map_location="cpu", weights_only=False)
        load = engine.optimizer.load_state_dict
        if "state_dict_list" in inspect.signature(load).parameters:  # ZeRO / bf16 wrappers index by rank
            load([sd if r == rank else None for r in range(world)], load_from_fp32_weights=True)
        else:
            load(sd)
    else:
        log(f"note: checkpoint from {state.get('world_size')} workers, now {world}: optimizer state restarts")
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", map_location="cpu", weights_only=False))
    # The schedule continues where it stopped: without this, an optimizer that restarted (another world size)
    # would take its next step at the rate it was built with (the first warm-up rate), not the saved one.
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr(), strict=True):
        group["lr"] = lr
    return state


def read_history(ckpt: Path) -> list[dict[str, Any]]:
    f = ckpt / HISTORY
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []


def write_history(history: list[dict[str, Any]], out: Path) -> None:
    (out / HISTORY).write_text("".join(json.dumps(h) + "\n" for h in history))
