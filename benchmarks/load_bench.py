"""Load held, not shed: many concurrent clients against the endpoint on the real default model, with the router's
admission queue on (the shipped defaults) and, in the same run, off (max_queued 0: everything above
max_in_flight is answered 429 at once, the old behaviour). Prints measured numbers only.

    .venv/bin/python benchmarks/load_bench.py [--requests 300] [--concurrency 96] [--max-tokens 16] [--json]

The mix per request (seeded): base or adapter, RAG on or off, streaming or not, chat. Clients do not retry, so a
429 counts as a failure. Needs the imported SmolLM2 (imported on demand from its PyPI wheel).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

QUESTIONS = [
    "How often is the cooling pump flushed?",
    "Which torque do the valve bolts need?",
    "What does alarm E42 mean?",
    "Which seal kit fits the V3 valve?",
    "What is the maximum inlet pressure?",
    "How is the filter changed?",
]


async def one(client: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        if body.get("stream"):
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                async for _ in r.aiter_bytes():
                    pass
                status, retry = r.status_code, r.headers.get("retry-after")
        else:
            r = await client.post(f"{url}/v1/chat/completions", json=body)
            status, retry = r.status_code, r.headers.get("retry-after")
    except Exception as exc:  # noqa: BLE001 - a transport failure is a result here, not a crash
        return {"status": f"error:{type(exc).__name__}", "s": time.perf_counter() - t0, "retry_after": None}
    return {"status": status, "s": time.perf_counter() - t0, "retry_after": retry}


async def load(url: str, bodies: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def guarded(body: dict[str, Any]) -> dict[str, Any]:
            async with sem:
                return await one(client, url, body)

        t0 = time.perf_counter()
        results = await asyncio.gather(*(guarded(b) for b in bodies))
        wall = time.perf_counter() - t0
        health = (await client.get(f"{url}/healthz")).json()
    codes: dict[str, int] = {}
    for r in results:
        codes[str(r["status"])] = codes.get(str(r["status"]), 0) + 1
    ok = sorted(r["s"] for r in results if r["status"] == 200)
    q = statistics.quantiles(ok, n=100) if len(ok) >= 2 else [ok[0] if ok else 0.0] * 99
    n429 = [r for r in results if r["status"] == 429]
    return {
        "requests": len(results),
        "codes": codes,
        "ok_fraction": round(len(ok) / len(results), 3),
        "5xx": sum(v for k, v in codes.items() if k.startswith("5")),
        "429_with_retry_after": sum(1 for r in n429 if r["retry_after"]),
        "p50_s": round(q[49], 2),
        "p99_s": round(q[98], 2),
        "wall_s": round(wall, 1),
        "after": {"in_flight": health.get("in_flight"), "queued": health.get("queued")},
    }


def bodies(n: int, adapter: str, max_tokens: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(
            {
                "model": rng.choice(["smollm2-135m-instruct", adapter]),
                "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": rng.random() < 0.5,
                "rag": rng.random() < 0.5,
            }
        )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from core.adapter_store import AdapterStore
    from core.fingerprint import model_fingerprint
    from core.net import free_port
    from serving.app import start, stop
    from training.gguf_import import ensure_default
    from training.tiny import random_adapter

    model = Path(ensure_default()["path"])
    work = Path(tempfile.mkdtemp(prefix="load-bench-"))
    store = AdapterStore(str(work / "adapters"))
    src = random_adapter(model, work / "src", seed=1)
    store.publish(src, "load-a", {"base_model": model.name}, base_fingerprint=model_fingerprint(model))
    docs = [
        {"source": str(p.relative_to(REPO / "examples")), "text": p.read_text()}
        for p in sorted((REPO / "examples" / "docs").rglob("*.md"))
    ]
    out: dict[str, Any] = {"concurrency": args.concurrency, "max_tokens": args.max_tokens}
    for label, queued in (("queue_on", None), ("queue_off", 0)):
        router: dict[str, Any] = {
            "host": "127.0.0.1",
            "api_keys_env": None,
            "default_max_tokens": args.max_tokens,
        }
        if queued is not None:
            router["max_queued"] = queued
        cfg = {
            "app_name": "expert-load",
            "model": {"path": str(model), "name": "smollm2-135m-instruct", "enforce_eager": True},
            "adapters": {"store": str(work / "adapters")},
            "retriever": {"uri": str(work / f"milvus-{label}.db"), "collection": "helix_docs", "top_k": 4},
            "router": router,
        }
        url = start(cfg, port=free_port())
        try:
            r = httpx.post(
                f"{url}/v1/documents", json={"collection": "helix_docs", "documents": docs}, timeout=600
            )
            r.raise_for_status()
            warm = bodies(4, "load-a", args.max_tokens, seed=99)
            asyncio.run(load(url, warm, 4))  # adapter loaded, engine warm: not measured
            out[label] = asyncio.run(
                load(url, bodies(args.requests, "load-a", args.max_tokens), args.concurrency)
            )
        finally:
            stop()
        print(f"{label}: {json.dumps(out[label])}", file=sys.stderr)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=96)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out = run(args)
    if args.json:
        print(json.dumps(out))
    else:
        for label in ("queue_on", "queue_off"):
            r = out[label]
            print(
                f"{label}: {r['ok_fraction']:.1%} answered 200 of {r['requests']} ({r['codes']}), 5xx {r['5xx']}, "
                f"p50 {r['p50_s']} s, p99 {r['p99_s']} s, wall {r['wall_s']} s, after {r['after']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
