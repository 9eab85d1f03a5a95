"""The product on a real pretrained model: SmolLM2-135M-Instruct fine-tuned with QLoRA on 2 Ray Train workers
(DeepSpeed ZeRO-3), served with RAG over the example documents, asked domain questions.

Everything is real (Ray, DeepSpeed, bitsandbytes, vLLM, Milvus Lite, the embedder, the model). The app here is
stopped when the module ends, so the tiny-model serving app of tests/serving can start afterwards (Serve has one
HTTP proxy per cluster).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.net import free_port

REPO = Path(__file__).resolve().parents[2]
TRAIN_STEPS = 12
API_KEY = "expert-key"


@pytest.fixture(scope="module")
def expert_run(smollm2_dir: Path, session_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`python -m cluster demo` (what `make demo` runs) on the session's data folder: import, ingest, fine-tune
    `training/configs/smollm2-qlora.yaml` as shipped but shortened to TRAIN_STEPS, serve, and evaluate the first
    two questions in four modes. The demo's success path, and the adapter and corpus the tests below use."""
    import yaml

    work = tmp_path_factory.mktemp("expert-train")
    cfg = yaml.safe_load((REPO / "training/configs/smollm2-qlora.yaml").read_text())
    cfg["model"]["path"] = str(smollm2_dir)
    cfg["optim"].update(max_steps=TRAIN_STEPS, warmup_steps=2, micro_batch_size=4)
    cfg["run"].update(eval_every=TRAIN_STEPS, checkpoint_every=TRAIN_STEPS)
    cfg["output"] = {"adapter_name": "smollm2-expert"}  # the data folder's store, which the demo serves from
    train_config = work / "smollm2-expert.yaml"
    train_config.write_text(yaml.safe_dump(cfg))
    cmd = [
        sys.executable, "-m", "cluster", "demo", "--train-config", str(train_config), "--limit", "2",
        "--port", str(free_port()), "--json",
    ]  # fmt: skip
    env = {**os.environ, "DE_DATA_DIR": str(session_data_dir)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    demo = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "result": demo["training"],
        "demo": demo,
        "store": session_data_dir / "adapters",
        "milvus": session_data_dir / "milvus.db",
        "stderr": proc.stderr,
    }


def expert_config(model_dir: Path, store: Path, milvus: Path, port: int) -> dict[str, Any]:
    return {
        "app_name": "expert-test",
        "model": {
            "path": str(model_dir),
            "name": "smollm2",
            "max_model_len": 2048,
            "kv_cache_gib": 0.5,
            "enforce_eager": True,
            "max_lora_rank": 16,
            "max_loras": 2,
            "max_loaded_adapters": 4,
            "replicas": {"num_cpus": 1},
        },
        "adapters": {"store": str(store), "refresh_s": 3600},
        "retriever": {
            "uri": str(milvus),
            "collection": "helix_docs",
            "top_k": 4,
            "replicas": {"num_cpus": 0.5},
        },
        "router": {
            "host": "127.0.0.1",
            "port": port,
            "api_keys": [API_KEY],
            "api_keys_env": None,
            "default_max_tokens": 64,
            "replicas": {"num_cpus": 0.5},
        },
    }


@pytest.fixture(scope="module")
def expert_app(ray_local, smollm2_dir: Path, expert_run: dict):
    """The real model with the demo's adapter and the example documents the demo ingested (Milvus Lite)."""
    from serving.app import start, stop

    milvus = expert_run["milvus"]  # ingested by the demo, whose process (and Milvus Lite lock) has ended
    port = free_port()
    try:
        url = start(expert_config(smollm2_dir, expert_run["store"], milvus, port), port=port, timeout_s=900)
    except BaseException:
        stop()  # Serve's proxy must not outlive a failed start: tests/serving starts its own app next
        raise
    yield {"url": url, "store": expert_run["store"], "adapter": expert_run["result"]["adapter_name"]}
    stop()


def chat(url: str, body: dict[str, Any]) -> Any:
    import httpx

    return httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300
    )
