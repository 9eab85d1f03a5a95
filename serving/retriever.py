"""The retriever deployment: the single owner of the Milvus connection (a Lite file takes a process-wide lock)
and of the embedder, so searches and ingestion from the router all go through this one process.

Query embedding is batched across concurrent searches (`serve.batch`): under load one forward pass embeds every
waiting query instead of one pass per query, which is what made RAG latency grow with concurrency.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ray import serve

from core.errors import UserError
from retrieval.store import CollectionNotFound
from serving.config import RetrieverConfig


@serve.deployment(name="Retriever", health_check_period_s=10)
class RetrieverServer:
    def __init__(self, cfg: dict[str, Any]) -> None:
        from retrieval import RetrievalConfig, Retriever

        self.cfg = RetrieverConfig.model_validate(cfg)
        rcfg = RetrievalConfig(
            uri=self.cfg.resolved_uri(),
            token=self.cfg.token,
            collection=self.cfg.collection,
            embedder=self.cfg.embedder,
        )
        self.retriever = Retriever(rcfg)
        self.retriever.embedder  # noqa: B018 - load the embedder now, not on the first request

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _embed(self, queries: list[str]) -> list[list[float]]:
        vectors = await asyncio.to_thread(self.retriever.embedder.embed, queries)
        return [v.tolist() for v in vectors]

    async def search(
        self, query: str, collection: str | None, top_k: int, filter: str | dict[str, Any] | None
    ) -> dict[str, Any]:
        """{"hits": [...]} or {"error", "status"} for input the user can fix (unknown collection, bad filter)."""
        try:
            vector = await self._embed(query) if isinstance(query, str) and query.strip() else None
            hits = await asyncio.to_thread(
                self.retriever.search,
                query,
                top_k=top_k,
                filter=filter,
                collection=collection or self.cfg.collection,
                vector=vector,
            )
        except CollectionNotFound as exc:
            return {"error": str(exc), "status": 404}
        except UserError as exc:
            return {"error": str(exc), "status": 400}
        return {"hits": [h.to_dict() for h in hits]}

    async def ingest(self, documents: list[dict[str, Any]], collection: str | None) -> dict[str, Any]:
        try:
            report = await asyncio.to_thread(
                self.retriever.ingest_texts, documents, collection=collection or self.cfg.collection
            )
        except UserError as exc:
            return {"error": str(exc), "status": 400}
        return dict(report)

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        """Vectors for `/v1/embeddings` (unit length, as the collections store them) and their token count."""
        embedder = self.retriever.embedder

        def run() -> dict[str, Any]:
            vectors = embedder.embed(texts)
            tokens = sum(len(ids) for ids in embedder.tokenizer(texts, truncation=True)["input_ids"])
            return {"vectors": vectors.tolist(), "tokens": tokens}

        return await asyncio.to_thread(run)

    async def embedder_info(self) -> dict[str, Any]:
        # The model id clients send: the folder name of the embedder ("all-MiniLM-L6-v2" for the default).
        name = Path(self.retriever.embedder.name.split(" (")[0]).name
        return {"name": name, "dim": self.retriever.embedder.dim}

    async def collections(self) -> list[str]:
        return await asyncio.to_thread(self.retriever.collections)

    async def ping(self) -> str:
        return "ok"

    def __del__(self) -> None:
        retriever = getattr(self, "retriever", None)
        if retriever is not None:
            retriever.close()
