"""Training publishes the adapter with its base's fingerprint, so servers and merges can pair them."""

from __future__ import annotations

import json
from pathlib import Path

from core.adapter_store import AdapterStore
from core.fingerprint import model_fingerprint
from training import checkpoint as ck
from training.config import TrainConfig
from training.data import DataReport
from training.publish import publish
from training.tiny import random_adapter

REPO = Path(__file__).resolve().parents[2]


def test_publish_records_base_model_and_fingerprint(tiny_model_dir: Path, tmp_path: Path) -> None:
    ckpt = random_adapter(tiny_model_dir, tmp_path / "ckpt", seed=5, rank=4)  # a checkpoint's adapter files
    ck.write_history([{"step": 1, "loss": 2.0, "tokens": 64, "step_time": 0.5}], ckpt)
    cfg = TrainConfig.from_file(
        REPO / "training/configs/tiny-lora.yaml",
        [f"output.store={tmp_path / 'store'}", "output.adapter_name=pub-v1"],
    )
    out = publish(cfg, ckpt, str(tiny_model_dir), DataReport(rows=1), tmp_path / "run")
    info = AdapterStore(tmp_path / "store").get("pub-v1")
    assert info.base_model == str(tiny_model_dir)
    assert info.base_fingerprint == model_fingerprint(tiny_model_dir) == out["base_fingerprint"]
    assert out["adapter_version"] == info.version == 1
    assert json.loads((tmp_path / "store" / "pub-v1" / "1" / "metadata.json").read_text())["base_fingerprint"]
