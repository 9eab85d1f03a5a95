"""Soak and faults on the real default model: mixed traffic above max_in_flight for several minutes while faults
are injected one after another; prints what each cost (failed requests, time to recover) and whether memory stayed
flat. Measured numbers only; not a test.

    .venv/bin/python benchmarks/soak_bench.py [--requests 1000] [--concurrency 96] [--max-tokens 8] [--json]

Setup: SmolLM2-135M-Instruct, two random adapters, documents from examples/docs in a Milvus server (Milvus Lite's
gRPC server on 127.0.0.1) behind two retriever replicas; router defaults (max_in_flight 64, queue 192, 30 s).
Faults, in order while the load runs: the LLM replica killed; one retriever replica killed; the Milvus server
stopped for 15 s and restarted; an adapter published mid-load (then requested); a corrupt adapter dropped into
the store (then requested: must be a 4xx); clients that leave mid-stream and before the first byte. At the end
/healthz must show no request in flight or queued (no slot leaked).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

APP = "expert-soak"
QUESTIONS = [
    "How often is the cooling pump flushed?",
    "Which torque do the valve bolts need?",
    "What does alarm E42 mean?",
    "Which seal kit fits the V3 valve?",
]


class Recorder:
    """Every request: start/end time (since t0), kind, HTTP status (or 'error:...')."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.rows: list[dict[str, Any]] = []

    def now(self) -> float:
        return time.monotonic() - self.t0


async def request(
    client: Any, url: str, rec: Recorder, body: dict[str, Any], kind: str, leave: str = ""
) -> None:
    """One chat request; `leave` = 'first-byte' (disconnect before any byte) or 'mid-stream'."""
    import httpx

    start = rec.now()
    status: Any
    degraded = None
    try:
        if leave == "first-byte":
            try:
                await client.post(f"{url}/v1/chat/completions", json=body, timeout=0.05)
                status = "answered"
            except httpx.TimeoutException:
                status = "left"
        elif body.get("stream"):
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                status = r.status_code
                async for _ in r.aiter_bytes():
                    if leave == "mid-stream":
                        status = "left"
                        break
        else:
            r = await client.post(f"{url}/v1/chat/completions", json=body)
            status = r.status_code
            if status == 200 and body.get("rag"):
                degraded = r.json().get("rag", {}).get("degraded")
    except Exception as exc:  # noqa: BLE001 - a transport failure is a measured outcome
        status = f"error:{type(exc).__name__}"
    rec.rows.append({"start": start, "end": rec.now(), "kind": kind, "status": status, "degraded": degraded})


def body(rng: random.Random, models: list[str], max_tokens: int) -> tuple[dict[str, Any], str]:
    model = rng.choice(models)
    rag = rng.random() < 0.5
    b = {
        "model": model,
        "messages": [{"role": "user", "content": rng.choice(QUESTIONS)}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": rng.random() < 0.5,
        "rag": rag,
    }
    return b, ("rag" if rag else "plain")


def actor_rss(app: str) -> dict[str, float]:
    """RSS (MiB) of this app's replica processes and their children (vLLM's engine core), by deployment; found by
    the process title Ray gives replicas (`ray::ServeReplica:<app>:<deployment>`), no dashboard needed."""
    import psutil

    out: dict[str, float] = {}
    tag = f"ServeReplica:{app}:"
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if tag not in title:
            continue
        dep = title.split(tag, 1)[1].split()[0].split(".")[0]
        try:
            procs = [proc, *proc.children(recursive=True)]
            out[dep] = out.get(dep, 0.0) + sum(p.memory_info().rss for p in procs) / 2**20
        except psutil.NoSuchProcess:
            pass
    return {k: round(v) for k, v in out.items()}


def kill_replica(app: str, deployment: str) -> None:
    import ray

    names = [
        a for a in ray.util.list_named_actors(all_namespaces=True) if f"{app}#{deployment}#" in a["name"]
    ]
    ray.kill(ray.get_actor(names[0]["name"], namespace=names[0]["namespace"]), no_restart=False)


def window(rec: Recorder, t: float, kinds: set[str] | None = None, span: float = 120) -> dict[str, Any]:
    """Requests that started within `span` s after a fault at t: failures, and when things worked again."""
    rows = [r for r in rec.rows if t <= r["start"] < t + span and (kinds is None or r["kind"] in kinds)]
    bad = [r for r in rows if r["status"] not in (200, "left", "answered")]
    ok_after = [
        r["end"]
        for r in rows
        if r["status"] == 200 and r["start"] > max((b["start"] for b in bad), default=t)
    ]
    return {
        "requests": len(rows),
        "failed": len(bad),
        "codes": sorted({str(b["status"]) for b in bad}),
        "recovered_after_s": round(min(ok_after) - t, 1) if ok_after else None,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from core.adapter_store import AdapterStore
    from core.fingerprint import model_fingerprint
    from core.net import free_port
    from serving.app import start, stop
    from tests.milvus_server import MilvusServer
    from training.gguf_import import ensure_default
    from training.tiny import random_adapter

    model = Path(ensure_default()["path"])
    fp = model_fingerprint(model)
    work = Path(tempfile.mkdtemp(prefix="soak-bench-"))
    store = AdapterStore(str(work / "adapters"))
    for i, name in enumerate(["soak-a", "soak-b", "soak-late"]):
        random_adapter(model, work / f"src-{name}", seed=i)
    for name in ("soak-a", "soak-b"):
        store.publish(work / f"src-{name}", name, {"base_model": model.name}, base_fingerprint=fp)
    milvus = MilvusServer(work / "milvus", free_port()).start()
    cfg = {
        "app_name": APP,
        "model": {"path": str(model), "name": "smollm2-135m-instruct", "enforce_eager": True},
        "adapters": {"store": str(work / "adapters"), "refresh_s": 5},
        "retriever": {
            "uri": milvus.uri,
            "collection": "helix_docs",
            "top_k": 4,
            "replicas": {"num_replicas": 2, "num_cpus": 0.25},
        },  # fmt: skip
        "router": {"host": "127.0.0.1", "api_keys_env": None, "default_max_tokens": args.max_tokens},
    }
    url = start(cfg, port=free_port())
    docs = [
        {"source": str(p.relative_to(REPO / "examples")), "text": p.read_text()}
        for p in sorted((REPO / "examples" / "docs").rglob("*.md"))
    ]
    out: dict[str, Any] = {"requests_target": args.requests, "concurrency": args.concurrency}
    try:
        async with httpx.AsyncClient(
            timeout=600, limits=httpx.Limits(max_connections=args.concurrency + 32)
        ) as client:
            r = await client.post(f"{url}/v1/documents", json={"collection": "helix_docs", "documents": docs})
            r.raise_for_status()
            rec = Recorder()
            rng = random.Random(0)
            models = ["smollm2-135m-instruct", "soak-a", "soak-b"]
            warm = [
                request(client, url, rec, body(rng, models, args.max_tokens)[0], "warm") for _ in range(8)
            ]
            await asyncio.gather(*warm)
            out["rss_start_mib"] = actor_rss(APP)
            rec.rows.clear()
            sem = asyncio.Semaphore(args.concurrency)
            faults: dict[str, float] = {}
            stop_load = asyncio.Event()

            async def client_loop() -> None:
                while not stop_load.is_set():
                    async with sem:
                        b, kind = body(rng, models, args.max_tokens)
                        await request(client, url, rec, b, kind)

            async def injector() -> None:
                await asyncio.sleep(20)
                faults["llm_replica_killed"] = rec.now()
                kill_replica(APP, "LLMServer")
                await asyncio.sleep(100)
                faults["retriever_replica_killed"] = rec.now()
                kill_replica(APP, "Retriever")
                await asyncio.sleep(40)
                faults["milvus_stopped_15s"] = rec.now()
                milvus.stop()
                await asyncio.sleep(15)
                milvus.start()
                await asyncio.sleep(40)
                faults["adapter_published"] = rec.now()
                store.publish(
                    work / "src-soak-late", "soak-late", {"base_model": model.name}, base_fingerprint=fp
                )
                late = [request(client, url, rec, {**body(rng, ["soak-late"], args.max_tokens)[0]}, "late")
                        for _ in range(8)]  # fmt: skip
                await asyncio.gather(*late)
                faults["corrupt_adapter_dropped"] = rec.now()
                (work / "adapters" / "soak-broken").mkdir()
                (work / "adapters" / "soak-broken" / "metadata.json").write_text("{not json")
                bad = [request(client, url, rec, {**body(rng, ["soak-broken"], args.max_tokens)[0]}, "broken")
                       for _ in range(4)]  # fmt: skip
                await asyncio.gather(*bad)
                faults["clients_left"] = rec.now()
                leavers = []
                for i in range(24):
                    b = {**body(rng, models, 64)[0], "stream": True}
                    leavers.append(
                        request(client, url, rec, b, "leave", "mid-stream" if i % 2 else "first-byte")
                    )
                await asyncio.gather(*leavers)

            loops = [asyncio.create_task(client_loop()) for _ in range(args.concurrency)]
            await injector()
            while len([r for r in rec.rows if r["kind"] in ("plain", "rag")]) < args.requests:
                await asyncio.sleep(1)
            stop_load.set()
            await asyncio.gather(*loops)
            await asyncio.sleep(5)
            health = (await client.get(f"{url}/healthz")).json()
            out["rss_end_mib"] = actor_rss(APP)
    finally:
        stop()
        milvus.stop()
    main_rows = [r for r in rec.rows if r["kind"] in ("plain", "rag")]
    ok = sorted(r["end"] - r["start"] for r in main_rows if r["status"] == 200)
    codes: dict[str, int] = {}
    for r in main_rows:
        codes[str(r["status"])] = codes.get(str(r["status"]), 0) + 1
    out.update(
        {
            "requests": len(main_rows),
            "wall_s": round(rec.now(), 1),
            "codes": codes,
            "5xx": sum(v for k, v in codes.items() if k.startswith("5")),
            "429": codes.get("429", 0),
            "p50_s": round(ok[len(ok) // 2], 2) if ok else None,
            "p99_s": round(ok[int(len(ok) * 0.99) - 1], 2) if ok else None,
            "faults": {
                "llm_replica_killed": window(rec, faults["llm_replica_killed"], {"plain", "rag"}),
                "retriever_replica_killed": window(rec, faults["retriever_replica_killed"], {"rag"}, 40),
                "milvus_stopped_15s": window(rec, faults["milvus_stopped_15s"], {"rag"}, 40),
                "rag_degraded_during_milvus_outage": sum(
                    1
                    for r in rec.rows
                    if r["kind"] == "rag"
                    and r["degraded"]
                    and faults["milvus_stopped_15s"] <= r["start"] < faults["milvus_stopped_15s"] + 40
                ),  # fmt: skip
                "adapter_published": {"late_codes": [r["status"] for r in rec.rows if r["kind"] == "late"]},
                "corrupt_adapter": {
                    "codes": [r["status"] for r in rec.rows if r["kind"] == "broken"],
                    "others": window(rec, faults["corrupt_adapter_dropped"], {"plain", "rag"}, 30),
                },  # fmt: skip
                "clients_left": {
                    "outcomes": sorted(str(r["status"]) for r in rec.rows if r["kind"] == "leave")
                },
            },
            "after": {"in_flight": health.get("in_flight"), "queued": health.get("queued")},
        }
    )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=96)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out = asyncio.run(run(args))
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
