"""RAG for one request: which collection, how many chunks, which filter and deadline (the plan), and the
retrieval call itself with the route's failure policy (fail with 503, or answer without context, marked).

The plan merges three layers, most specific first: the request's `rag` options, its route, the retriever
defaults. A route's filter always applies; a request can only narrow it (AND), never widen it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from serving.config import RetrieverConfig, RouteConfig
from serving.metrics import ServingMetrics
from serving.protocol import APIError, RagOptions


def rag_plan(
    req_rag: RagOptions | bool | None, route: RouteConfig | None, rc: RetrieverConfig, has_retriever: bool
) -> dict[str, Any] | None:
    """The retrieval this request asks for, or None when it asks for none."""
    opts = RagOptions() if req_rag is True else req_rag if isinstance(req_rag, RagOptions) else None
    if req_rag is False or (opts is not None and not opts.enabled):
        return None
    if opts is None and not (route and route.rag):
        return None
    if not has_retriever:
        raise APIError(400, "RAG was requested but this server runs without a retriever", param="rag")
    return {
        "collection": (opts and opts.collection) or (route and route.collection) or rc.collection,
        "top_k": (opts and opts.top_k) or (route and route.top_k) or rc.top_k,
        "filter": [f for f in ((route and route.filter), (opts and opts.filter)) if f] or None,
        "timeout_s": (route and route.timeout_s) or rc.timeout_s,
        "on_error": (route and route.on_retriever_error) or rc.on_error,
    }


async def retrieve(
    retriever: Any, query: str, plan: dict[str, Any], route: str | None, metrics: ServingMetrics
) -> tuple[list[dict[str, Any]], bool, float]:
    """(hits, degraded, seconds waited): the retriever deployment's hits within the plan's deadline, or the
    route's policy. The seconds are the same figure the retrieval histogram gets."""
    start = time.perf_counter()

    async def call() -> dict[str, Any]:
        return await retriever.search.remote(query, plan["collection"], plan["top_k"], plan["filter"])

    try:
        result = await asyncio.wait_for(call(), timeout=plan["timeout_s"])
    except Exception as exc:  # noqa: BLE001 - timeout, replica death, Milvus down: all handled by policy
        seconds = time.perf_counter() - start
        metrics.retrieval.observe(seconds, {"route": route or "", "outcome": "error"})
        if plan["on_error"] == "fail":
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
            raise APIError(
                503, f"retriever unavailable ({reason}); retry later", type_="service_unavailable"
            ) from None
        return [], True, seconds
    seconds = time.perf_counter() - start
    metrics.retrieval.observe(seconds, {"route": route or "", "outcome": "ok"})
    if "error" in result:
        raise APIError(result["status"], result["error"], param="rag")
    return result["hits"], False, seconds
