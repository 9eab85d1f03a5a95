"""Prometheus metrics per model, adapter and route, exported through Ray's metrics endpoint.

Created lazily inside the router replica (Ray metrics need a connected worker).
"""

from __future__ import annotations

from typing import Any

TAGS = ("model", "adapter", "route")
LATENCY_BOUNDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]


class ServingMetrics:
    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Histogram

        self.requests = Counter(
            "domain_expert_requests_total", "Completed and failed requests.", tag_keys=(*TAGS, "status")
        )
        self.errors = Counter(
            "domain_expert_request_errors_total",
            "Requests answered with an error.",
            tag_keys=(*TAGS, "status"),
        )
        self.prompt_tokens = Counter(
            "domain_expert_prompt_tokens_total", "Prompt tokens sent to the engine.", tag_keys=TAGS
        )
        self.completion_tokens = Counter(
            "domain_expert_completion_tokens_total", "Tokens generated.", tag_keys=TAGS
        )
        self.latency = Histogram(
            "domain_expert_request_latency_s", "End-to-end latency.", boundaries=LATENCY_BOUNDS, tag_keys=TAGS
        )
        self.ttft = Histogram(
            "domain_expert_time_to_first_token_s",
            "Time to first token.",
            boundaries=LATENCY_BOUNDS,
            tag_keys=TAGS,
        )
        self.retrieval = Histogram(
            "domain_expert_retrieval_latency_s",
            "Retriever call latency.",
            boundaries=LATENCY_BOUNDS,
            tag_keys=("route", "outcome"),
        )

    @staticmethod
    def tags(model: str, adapter: str | None, route: str | None) -> dict[str, str]:
        return {"model": model, "adapter": adapter or "", "route": route or ""}

    def done(
        self, tags: dict[str, str], status: int, latency: float, ttft: float | None, usage: dict[str, Any]
    ) -> None:
        self.requests.inc(1, {**tags, "status": str(status)})
        if status >= 400:
            self.errors.inc(1, {**tags, "status": str(status)})
            return
        if usage.get("prompt_tokens"):
            self.prompt_tokens.inc(usage["prompt_tokens"], tags)
        if usage.get("completion_tokens"):
            self.completion_tokens.inc(usage["completion_tokens"], tags)
        self.latency.observe(latency, tags)
        if ttft is not None:
            self.ttft.observe(ttft, tags)
