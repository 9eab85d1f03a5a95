"""Session-scoped fixtures shared by every test package: one tiny model, one local Ray cluster.

Heavy things (Ray, the vLLM engine, Milvus Lite, the embedder) are started once per session; package-level
conftest files build on these. Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every Ray a test starts binds to 127.0.0.1 only
os.environ["VLLM_HOST_IP"] = "127.0.0.1"

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private data folder for the session (the real `data/` is left to the demo)."""
    path = tmp_path_factory.mktemp("data")
    os.environ["DE_DATA_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(session_data_dir: Path) -> Path:
    """The project's tiny Llama, built once per session (a few seconds)."""
    from training.tiny import build

    out = session_data_dir / "models" / "tiny-llama"
    build(out)
    return out


@pytest.fixture(scope="session")
def ray_local(session_data_dir: Path):
    """One local Ray cluster on 127.0.0.1 for the whole session (training, serving, Ray Data tests share it)."""
    import ray

    from cluster.ray_conn import connect

    connect()
    yield ray
    # Multi-node tests shut this down themselves before starting their own cluster.
    if ray.is_initialized():
        ray.shutdown()
