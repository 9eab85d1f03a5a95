"""Metrics: progress lines on stderr, optional TensorBoard / MLflow sinks, the loss-curve PNG and summaries.

Everything is derived from one history (a list of per-step records) that travels inside checkpoints, so a
resumed run keeps one continuous curve.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError

if TYPE_CHECKING:
    from training.config import TrainConfig


def require_mlflow():
    try:
        import mlflow
    except ImportError:
        raise UserError(
            "tracking.mlflow_uri is set but mlflow is not installed: pip install mlflow"
        ) from None
    return mlflow


class Tracker:
    """Rank 0's sinks: console progress always, TensorBoard / MLflow when configured."""

    def __init__(self, cfg: TrainConfig, run_dir: str | None) -> None:
        self.start = time.perf_counter()
        self.tb = None
        self.mlflow = None
        if cfg.tracking.tensorboard and run_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if cfg.tracking.mlflow_uri:
            self.mlflow = require_mlflow()
            self.mlflow.set_tracking_uri(cfg.tracking.mlflow_uri)
            self.mlflow.set_experiment(cfg.tracking.experiment)
            self.mlflow.start_run(run_name=cfg.run.name)

    def log(self, record: dict[str, Any], total: int) -> None:
        step = record["step"]
        elapsed = time.perf_counter() - self.start
        tps = record["tokens"] / max(record["step_time"], 1e-9)
        bar = "#" * int(20 * step / total)
        extra = (
            f" eval_loss {record['eval_loss']:.4f} ppl {record['eval_ppl']:.1f}"
            if "eval_loss" in record
            else ""
        )
        print(
            f"[{bar:<20}] step {step}/{total} loss {record['loss']:.4f} lr {record['lr']:.2e} "
            f"{tps:,.0f} tok/s {elapsed:.0f}s{extra}",
            file=sys.stderr,
            flush=True,
        )
        scalars = {k: v for k, v in record.items() if k not in ("step",) and isinstance(v, (int, float))}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        if self.mlflow is not None:
            self.mlflow.log_metrics(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.mlflow is not None:
            self.mlflow.end_run()


def summarize(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Headline numbers: first and last loss, steps, training throughput (start-up excluded)."""
    if not history:
        return {"steps": 0, "initial_loss": None, "final_loss": None, "tokens_per_s": None}
    tokens = sum(h["tokens"] for h in history)
    seconds = sum(h["step_time"] for h in history)
    evals = [h for h in history if "eval_loss" in h]
    out = {
        "steps": history[-1]["step"],
        "initial_loss": history[0]["loss"],
        "final_loss": history[-1]["loss"],
        "tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds else None,
        "resumed_from": [h["resumed_from"] for h in history if "resumed_from" in h],
    }
    if evals:
        out.update(eval_loss=evals[-1]["eval_loss"], eval_ppl=evals[-1]["eval_ppl"])
    if "initial_eval_loss" in history[0]:  # held-out loss of the untrained adapter (the base model)
        out["initial_eval_loss"] = history[0]["initial_eval_loss"]
    return out


def write_metrics(history: list[dict[str, Any]], out_dir: Path) -> None:
    """metrics.jsonl and loss_curve.png into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    plot_loss(history, out_dir / "loss_curve.png")


def plot_loss(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="train loss")
    points = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if history and "initial_eval_loss" in history[0]:  # the untrained adapter, measured before step 1
        points.insert(0, (0, history[0]["initial_eval_loss"]))
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
