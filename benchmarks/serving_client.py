"""The load driver of the serving benchmark: OpenAI requests, streamed or not, at a fixed concurrency, measured
over repeated rounds. The same code drives plain `vllm serve` and this project's router, so their numbers differ
only by the server."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

Body = tuple[str, dict[str, Any]]  # (path, JSON body)


async def one_request(client: Any, path: str, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """Latency, time to first token, completion tokens (and the response's `rag` block, if any) of one request."""
    start = time.perf_counter()
    ttft, tokens, rag = None, 0, None
    if not stream:
        r = await client.post(path, json={**body, "stream": False})
        if r.status_code != 200:
            raise RuntimeError(f"{path} -> {r.status_code}: {r.text[:300]}")
        obj = r.json()
        end = time.perf_counter() - start
        return {
            "latency": end,
            "ttft": end,
            "tokens": obj["usage"]["completion_tokens"],
            "rag": obj.get("rag"),
        }
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", path, json=payload) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{path} -> {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            rag = rag or obj.get("rag")
            choice = (obj.get("choices") or [{}])[0]
            if ttft is None and (choice.get("text") or (choice.get("delta") or {}).get("content")):
                ttft = time.perf_counter() - start
            if obj.get("usage"):
                tokens = obj["usage"]["completion_tokens"]
    end = time.perf_counter() - start
    return {"latency": end, "ttft": end if ttft is None else ttft, "tokens": tokens, "rag": rag}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def summarize(results: list[dict[str, Any]], wall: float) -> dict[str, float]:
    lat = [r["latency"] for r in results]
    ttft = [r["ttft"] for r in results]
    out = {
        "requests": len(results),
        "tok_s": sum(r["tokens"] for r in results) / wall,
        "req_s": len(results) / wall,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * pct(lat, 0.99),
        "ttft_p50_ms": 1000 * statistics.median(ttft),
        "ttft_p99_ms": 1000 * pct(ttft, 0.99),
    }
    retrieval = [r["rag"]["retrieval_ms"] for r in results if r.get("rag") and "retrieval_ms" in r["rag"]]
    if retrieval:
        out["retrieval_p50_ms"] = statistics.median(retrieval)
        out["retrieval_p99_ms"] = pct(retrieval, 0.99)
    return out


async def workload(
    url: str, make: Callable[[int], list[Body]], concurrency: int, stream: bool, repeats: int = 3
) -> dict[str, float]:
    """Warm up once, then run `repeats` rounds of `make(round)` (fresh prompts each round: a replay would be
    served from vLLM's prefix cache); report the round with the median throughput and the range over the rounds
    (the machine is shared: single rounds are noisy, the median damps that)."""
    import httpx

    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as client:

        async def run(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with sem:
                return await one_request(client, path, body, stream)

        await asyncio.gather(*(run(p, b) for p, b in make(-1)[:4]))  # loads adapters, warms the engine
        rounds = []
        for i in range(repeats):
            bodies = make(i)
            start = time.perf_counter()
            results = await asyncio.gather(*(run(p, b) for p, b in bodies))
            rounds.append(summarize(results, time.perf_counter() - start))
    rounds.sort(key=lambda r: r["tok_s"])
    return {**rounds[len(rounds) // 2], "tok_s_min": rounds[0]["tok_s"], "tok_s_max": rounds[-1]["tok_s"]}


async def first_tokens(url: str, bodies: list[Body]) -> list[float]:
    """TTFT (ms) of requests sent one at a time: for adapters nobody asked for yet (the cold path)."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=900) as client:
        return [1000 * (await one_request(client, p, b, stream=True))["ttft"] for p, b in bodies]


def table(rows: list[tuple[str, dict[str, float]]]) -> str:
    head = (
        "| workload | req/s | tok/s (median round) | tok/s range | p50 ms | p99 ms | TTFT p50 ms | TTFT p99 ms |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    body = [
        f"| {name} | {r['req_s']:.2f} | {r['tok_s']:.1f} | {r['tok_s_min']:.0f}-{r['tok_s_max']:.0f} | "
        f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['ttft_p50_ms']:.0f} | {r['ttft_p99_ms']:.0f} |"
        for name, r in rows
    ]
    return "\n".join([head, *body])
