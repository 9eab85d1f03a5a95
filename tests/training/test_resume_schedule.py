"""A resume on another worker count restarts the optimizer (ZeRO partitions differ) but not the schedule: the
next step uses the learning rate the run had reached, not the first warm-up rate."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from training import checkpoint as ck
from training.config import TrainConfig
from training.loop import lr_lambda


def _cfg() -> TrainConfig:
    return TrainConfig.from_file(Path(__file__).resolve().parents[2] / "training/configs/tiny-lora.yaml", [
        "optim.warmup_steps=4", "optim.max_steps=20", "optim.lr=0.01",
    ])  # fmt: skip


def _opt_sched(cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=cfg.optim.lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))


def test_schedule_continues_when_the_optimizer_restarts(tmp_path: Path) -> None:
    cfg = _cfg()
    opt, sched = _opt_sched(cfg)
    for _ in range(9):  # past the warm-up, into the cosine decay
        opt.param_groups[0]["params"][0].grad = torch.ones(3)
        opt.step()
        sched.step()
    reached = sched.get_last_lr()[0]
    # The DeepSpeed engine is only the holder of `.optimizer` here; the optimizer and scheduler are real.
    ck.save_training_state(SimpleNamespace(optimizer=opt), sched, tmp_path, 0, {"step": 9, "world_size": 2})

    opt2, sched2 = _opt_sched(
        cfg
    )  # a fresh run with another world size: the optimizer state cannot be loaded
    first_warmup = opt2.param_groups[0]["lr"]
    ck.load_training_state(SimpleNamespace(optimizer=opt2), sched2, tmp_path, rank=0, world=1)
    assert first_warmup < reached * 0.5  # the two rates differ a lot, so the check below means something
    assert opt2.param_groups[0]["lr"] == reached == sched2.get_last_lr()[0]
    sched2.step()
    assert sched2.last_epoch == 10  # and the schedule goes on from there
