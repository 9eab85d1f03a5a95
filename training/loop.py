"""The per-worker training loop run by Ray Train's TorchTrainer: DeepSpeed engine over a PEFT model,
data from `ray.train.get_dataset_shard`, checkpoints reported with `ray.train.report`, resume from
`ray.train.get_checkpoint()` after a worker failure or a re-run with the same run name.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from training import checkpoint as ck
from training.config import TrainConfig
from training.data import collate
from training.metrics import Tracker
from training.model import adapter_config_dict, deepspeed_config, load_model


def lr_lambda(cfg: TrainConfig):
    """Linear warm-up, then cosine decay to 10% of the peak."""
    warm, total = cfg.optim.warmup_steps, cfg.optim.max_steps

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = (step - warm) / max(1, total - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


class Batches:
    """Micro-batches from a dataset shard, epoch after epoch, with all ranks agreeing on when an epoch ends
    (ZeRO-3 needs every rank to run the same number of forward passes)."""

    def __init__(
        self,
        shard,
        micro_batch: int,
        pad_id: int,
        seed: int,
        epoch: int = 0,
        skip: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.shard, self.micro_batch, self.pad_id, self.seed = shard, micro_batch, pad_id, seed
        self.device = device
        self.epoch, self.pos = epoch, 0
        self._it = self._new_iter()
        for _ in range(skip):  # resume mid-epoch: skip what the checkpoint had consumed
            self.next()

    def _new_iter(self):
        return iter(
            self.shard.iter_batches(
                batch_size=self.micro_batch,
                batch_format="numpy",
                local_shuffle_buffer_size=64,
                local_shuffle_seed=self.seed + self.epoch,
            )
        )

    def _agree(self, have: bool) -> bool:
        flag = torch.tensor([1 if have else 0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def next(self) -> dict[str, torch.Tensor]:
        for _ in range(2):
            batch = next(self._it, None)
            if self._agree(batch is not None):
                self.pos += 1
                return {k: v.to(self.device) for k, v in collate(batch, self.pad_id).items()}
            for _ in self._it:  # drain so the shard can start its next epoch
                pass
            self.epoch, self.pos = self.epoch + 1, 0
            self._it = self._new_iter()
        raise RuntimeError("a worker's data shard is empty")


def evaluate(engine, shard, micro_batch: int, pad_id: int) -> dict[str, float]:
    """Token-weighted eval loss and perplexity over the validation shards of all ranks."""
    batches = list(shard.iter_batches(batch_size=micro_batch, batch_format="numpy"))
    n = torch.tensor([len(batches)], device=engine.device)
    dist.all_reduce(n, op=dist.ReduceOp.MIN)
    totals = torch.zeros(2, dtype=torch.float64, device=engine.device)
    engine.eval()
    with torch.no_grad():
        for raw in batches[: int(n.item())]:
            b = {k: v.to(engine.device) for k, v in collate(raw, pad_id).items()}
            out = engine(**b)
            ntok = int((b["labels"][:, 1:] != -100).sum())
            if ntok:  # an all-masked batch has a NaN mean loss: it adds nothing
                totals += torch.tensor(
                    [float(out.loss) * ntok, ntok], dtype=torch.float64, device=engine.device
                )
    engine.train()
    dist.all_reduce(totals)
    if totals[1] == 0:
        return {}
    loss = float(totals[0] / totals[1])
    return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}


def _quiet_deepspeed() -> None:
    from deepspeed.utils import logger as ds_logger

    for h in ds_logger.handlers:
        if isinstance(h, logging.StreamHandler):
            h.setStream(sys.stderr)  # keep the driver's stdout for --json
    ds_logger.setLevel(logging.WARNING)


def train_loop(loop_config: dict[str, Any]) -> None:
    sys.stdout = sys.stderr  # worker prints reach the driver's stderr: its stdout ends with the --json line
    import deepspeed
    import ray.train

    cfg = TrainConfig.model_validate(loop_config["config"])
    model_path, pad_id = loop_config["model_path"], loop_config["pad_id"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    status = Path(loop_config["status_dir"]) if loop_config.get("status_dir") else None
    _quiet_deepspeed()
    torch.manual_seed(cfg.run.seed)

    # Ray Train already set up torch.distributed; DeepSpeed must adopt it before zero.Init reads the world size.
    deepspeed.init_distributed()
    ds_config = deepspeed_config(cfg)
    model = load_model(cfg, model_path, ds_config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    adapter_cfg = adapter_config_dict(model, loop_config["base_model"])

    step, epoch, pos, history = 0, 0, 0, []
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as d:
            ck.load_adapter_into(engine.module, Path(d))
            refresh = getattr(engine.optimizer, "refresh_fp32_params", None)
            if refresh:
                refresh()
            state = ck.load_training_state(engine, scheduler, Path(d), rank, world)
            history = ck.read_history(Path(d))
        step, epoch, pos = state["step"], state["epoch"], state["pos"]
        history = [h for h in history if h["step"] <= step]
        if rank == 0:
            print(f"resumed from checkpoint at step {step} (epoch {epoch})", file=sys.stderr, flush=True)
    resumed_from = step if resumed else None

    train = Batches(
        ray.train.get_dataset_shard("train"),
        cfg.optim.micro_batch_size,
        pad_id,
        cfg.data.seed,
        epoch,
        pos,
        device=engine.device,
    )
    val_shard = ray.train.get_dataset_shard("validation") if loop_config["has_validation"] else None
    tracker = Tracker(cfg, loop_config.get("run_dir")) if rank == 0 else None
    before: dict[str, float] = {}
    if val_shard is not None and not resumed:  # the base's held-out loss: what training must beat
        before = evaluate(engine, val_shard, cfg.optim.micro_batch_size, pad_id)
    engine.train()
    while step < cfg.optim.max_steps:
        t0 = time.perf_counter()
        stats = torch.zeros(2, dtype=torch.float64, device=engine.device)  # summed loss, tokens
        for _ in range(cfg.optim.grad_accum):
            batch = train.next()
            out = engine(**batch)
            # All ranks must run backward together (ZeRO collectives): an all-masked batch gives a zero loss
            # with a graph instead of the NaN mean cross-entropy.
            loss = out.loss if (batch["labels"][:, 1:] != -100).any() else out.logits.sum() * 0.0
            engine.backward(loss)
            engine.step()
            stats += torch.tensor(
                [float(loss.detach()), float(batch["attention_mask"].sum())],
                dtype=torch.float64,
                device=engine.device,
            )
        scheduler.step()
        step += 1
        dist.all_reduce(stats)
        record = {
            "step": step,
            "epoch": train.epoch,
            "loss": float(stats[0]) / (cfg.optim.grad_accum * world),
            "lr": scheduler.get_last_lr()[0],
            "tokens": int(stats[1]),
            "step_time": time.perf_counter() - t0,
        }
        if before:
            record["initial_eval_loss"], before = before["eval_loss"], {}
        if resumed_from is not None:  # marks the first step after a restart in the saved history
            record["resumed_from"], resumed_from = resumed_from, None
        if val_shard is not None and (step % cfg.run.eval_every == 0 or step == cfg.optim.max_steps):
            record.update(evaluate(engine, val_shard, cfg.optim.micro_batch_size, pad_id))
        history.append(record)
        if status is not None:
            status.mkdir(parents=True, exist_ok=True)
            (status / f"rank{rank}.txt").write_text(f"{os.getpid()} {step}\n")
        if tracker is not None:
            tracker.log(record, cfg.optim.max_steps)
        if step % cfg.run.checkpoint_every == 0 or step == cfg.optim.max_steps:
            adapter = ck.gathered_adapter_state(engine.module)  # collective: every rank
            with tempfile.TemporaryDirectory(prefix="ckpt-") as d:
                out = Path(d)
                state = {"step": step, "epoch": train.epoch, "pos": train.pos, "world_size": world}
                if rank == 0:
                    ck.save_adapter(adapter, adapter_cfg, out)
                    ck.write_history(history, out)
                ck.save_training_state(engine, scheduler, out, rank, state)
                metrics = {k: v for k, v in record.items() if isinstance(v, (int, float))}
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
    if tracker is not None:
        tracker.close()
