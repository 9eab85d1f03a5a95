"""One real serving app for the whole session: Ray Serve on 127.0.0.1, vLLM on CPU, Milvus Lite, real adapters.

Adapters are real PEFT LoRA adapters on the tiny model (lora_B perturbed so they differ from the base), published
through the AdapterStore exactly as training publishes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from core.net import free_port
from tests.memory_hog import memory_held
from tests.milvus_server import MilvusServer
from training.tiny import random_adapter as make_adapter

HELD_GIB = 3.0


def _rss_gib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(x for x in f if x.startswith("VmRSS:")).split()[1]) / 2**20


API_KEY = "test-key-123"
# Scoped keys (serving/auth.py): what tests/serving/test_scoped_keys.py proves each may and may not do.
READER_KEY, INGEST_KEY, SWAP_KEY = "reader-key-0123456789", "ingest-key-0123456789", "swap-key-0123456789"
SCOPED_KEYS = [
    {
        "name": "reader",
        "key": READER_KEY,
        "models": ["tiny-llama", "support-expert"],
        "collections": ["manuals"],
    },
    {"name": "ingester", "key": INGEST_KEY, "scopes": ["ingest"], "collections": ["scratch"]},
    {"name": "swapper", "key": SWAP_KEY, "scopes": ["read", "ingest"], "collections": ["manuals", "scratch"]},
]
FOREIGN, FOREIGN_BASE = "foreign-v1", "smollm2-135m-instruct"  # an adapter of another base, in the same store
DOCS = [
    {
        "source": "manuals/pump.md",
        "title": "Pump maintenance",
        "text": "# Pump maintenance\n\nThe Helix pump P-200 must be flushed every 400 operating hours. "
        "Close valve V3 before opening the filter housing. The torque for the housing bolts is 35 Nm.",
    },
    {
        "source": "manuals/valve.md",
        "title": "Valve reference",
        "text": "# Valve reference\n\nValve V3 isolates the pump from the main line. A leaking V3 seal is "
        "replaced with kit K-17. Pressure above 8 bar means the relief valve V9 is stuck.",
    },
    {
        "source": "manuals/safety.md",
        "title": "Safety",
        "text": "# Safety\n\nWear gloves and goggles. Never open the housing while the pump is running. "
        "Report incidents to the shift lead within one hour.",
    },
]


def serve_config(model_dir: Path, store: Path, milvus: str, port: int) -> dict[str, Any]:
    return {
        "app_name": "expert-test",
        "model": {
            "path": str(model_dir),
            "name": "tiny-llama",
            "max_model_len": 512,
            "kv_cache_gib": 0.25,  # bytes, not a fraction of NUMA node 0: the same on every machine
            "enforce_eager": True,
            "max_lora_rank": 16,
            "max_loras": 2,
            "max_loaded_adapters": 4,
            "replicas": {"num_cpus": 1},
        },
        "adapters": {"store": str(store), "refresh_s": 3600},  # long: proves a miss re-lists at once
        # A Milvus server (not a Lite file): two retriever replicas share the collection, as in production.
        "retriever": {
            "uri": milvus,
            "collection": "manuals",
            "top_k": 3,
            "timeout_s": 10,
            "replicas": {"num_replicas": 2, "num_cpus": 0.25},
        },
        "router": {
            "host": "127.0.0.1",
            "port": port,
            "api_keys": [API_KEY, *SCOPED_KEYS],
            "api_keys_env": None,
            "max_document_bytes": 64 * 1024,
            "max_in_flight": 24,
            "max_queued": 8,
            "queue_timeout_s": 120,
            "default_max_tokens": 16,
            "replicas": {"num_cpus": 0.5, "max_ongoing_requests": 128},
        },
        "routes": {
            "support-expert": {"adapter": "support-v3", "collection": "manuals", "top_k": 2},
            "foreign-route": {"adapter": FOREIGN},  # a route cannot smuggle in another base's adapter
            "valve-only": {"collection": "manuals", "top_k": 3, "filter": "source=manuals/valve.md"},
            "rag-strict": {"rag": True, "timeout_s": 0.0001, "on_retriever_error": "fail"},
            "rag-lenient": {"rag": True, "timeout_s": 0.0001, "on_retriever_error": "degrade"},
        },
    }


class App:
    def __init__(self, url: str, store: Any, model_dir: Path, workdir: Path, milvus: MilvusServer) -> None:
        self.url, self.store, self.model_dir, self.workdir = url, store, model_dir, workdir
        self.milvus = milvus

    def client(self, **kw: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=API_KEY, timeout=120, max_retries=0, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {API_KEY}", **kw.pop("headers", {})}
        return httpx.post(f"{self.url}{path}", headers=headers, timeout=120, **kw)


@pytest.fixture(scope="session")
def serving_app(
    ray_local, tiny_model_dir: Path, session_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
):
    from core.adapter_store import AdapterStore
    from core.fingerprint import model_fingerprint
    from serving.app import start, stop

    work = tmp_path_factory.mktemp("serving")
    store = AdapterStore(work / "adapters", cache_dir=work / "cache")
    tiny_fp = model_fingerprint(tiny_model_dir)
    for i, name in enumerate(["support-v3", "legal-v1"]):
        src = make_adapter(tiny_model_dir, work / f"src-{name}", seed=i)
        store.publish(src, name, {"base_model": "tiny-llama"}, base_fingerprint=tiny_fp)
    # Same shapes as the tiny model (so vLLM would load it), trained on another base: must never be served.
    src = make_adapter(tiny_model_dir, work / "src-foreign", seed=99)
    store.publish(src, FOREIGN, {"base_model": FOREIGN_BASE}, base_fingerprint="other-base-0123")
    milvus = MilvusServer(work / "milvus", free_port()).start()
    port = free_port()
    try:
        # Started while another process holds 3 GiB: the engine's memory must not depend on an idle machine.
        with memory_held(HELD_GIB) as hog_pid:
            held_rss = _rss_gib(hog_pid)
            url = start(
                serve_config(tiny_model_dir, work / "adapters", milvus.uri, port), port=port, timeout_s=600
            )
        app = App(url, store, tiny_model_dir, work, milvus)
        app.started_beside_gib = held_rss
        r = app.post("/v1/documents", json={"collection": "manuals", "documents": DOCS})
        assert r.status_code == 200, r.text
        yield app
    finally:
        stop()
        milvus.stop()
