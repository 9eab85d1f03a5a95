"""Publishing: the final checkpoint's adapter plus metrics, loss curve and metadata into the adapter store."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from core import storage
from core.adapter_store import AdapterStore
from core.cli import log
from core.fingerprint import model_fingerprint
from training import checkpoint as ck
from training.config import TrainConfig
from training.data import DataReport
from training.metrics import summarize, write_metrics


def store_for(cfg: TrainConfig) -> AdapterStore:
    return AdapterStore(cfg.output.store or storage.data_dir() / "adapters", keep_versions=cfg.output.keep_versions)


def publish(
    cfg: TrainConfig, ckpt: Path, model_path: str, report: DataReport, run_dir: Path
) -> dict[str, Any]:
    """Copy the adapter out of the checkpoint, add metrics, publish atomically; return the run summary.

    The base's fingerprint goes with the adapter: servers and merges use it to refuse any other base.
    """
    base_fp = model_fingerprint(model_path)
    history = ck.read_history(ckpt)
    summary = summarize(history)
    write_metrics(history, run_dir)
    with tempfile.TemporaryDirectory(prefix="adapter-") as tmp:
        staging = Path(tmp)
        for name in (ck.ADAPTER_CONFIG, ck.ADAPTER_WEIGHTS):
            shutil.copy2(ckpt / name, staging / name)
        write_metrics(history, staging)
        metadata = {
            "base_model": model_path,
            "method": cfg.model.method,
            "rank": cfg.lora.r,
            "alpha": cfg.lora.alpha,
            "target_modules": cfg.lora.target_modules,
            "dataset": cfg.data.path,
            "dataset_fingerprint": report.fingerprint,
            "data": report.to_dict(),
            "metrics": summary,
            "run": cfg.run.name,
            "trained_at": time.time(),
        }
        info = store_for(cfg).publish(
            staging,
            cfg.output.adapter_name,
            metadata,
            overwrite=cfg.output.overwrite,
            base_fingerprint=base_fp,
        )
    log(f"published adapter {info.ref} to {info.uri}")
    return {
        "adapter_name": info.name,
        "adapter_version": info.version,
        "adapter_path": info.uri,
        "store": store_for(cfg).root,
        "run_dir": str(run_dir),
        "base_model": model_path,
        "base_fingerprint": base_fp,
        **summary,
        "data": report.to_dict(),
    }
