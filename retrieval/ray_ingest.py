"""Ingestion on Ray Data for corpora larger than one machine: read+chunk tasks, an embedding actor pool, writes.

Same chunker and tokenizer as the single-process path, so the chunk ids are identical. Writes go to Milvus in
batches: from the workers for a Milvus server, from the driver (`iter_batches`) for Milvus Lite, whose file
lock admits one process. Stale chunks are deleted by the driver only after every new chunk is written.
Files must be readable at the same path from every node (a shared filesystem) on a multi-node cluster.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.chunking import chunk_document, embed_input, fingerprint
from retrieval.documents import FileProblem, discover, load

if TYPE_CHECKING:
    from retrieval.retriever import IngestReport, Retriever

COLUMNS = ("id", "source", "chunk", "title", "text", "content_hash", "status", "reason")
OK, UNCHANGED, SKIPPED, ERROR = "ok", "unchanged", "skipped", "error"


class ChunkFiles:
    """Read and chunk a batch of files; files whose chunk ids match what is stored come back as 'unchanged'."""

    def __init__(self, embedder: str | None, size: int, overlap: int, stored: dict[str, str]) -> None:
        from retrieval.embedder import load_tokenizer

        self.tokenizer = load_tokenizer(embedder)
        self.size, self.overlap, self.stored = size, overlap, stored

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {c: [] for c in COLUMNS}

        def add(row: dict[str, Any], status: str, reason: str = "") -> None:
            for c in COLUMNS[:6]:
                out[c].append(row.get(c, -1 if c == "chunk" else ""))
            out["status"].append(status)
            out["reason"].append(reason)

        for path, source in zip(batch["path"], batch["source"], strict=True):
            doc = load(Path(str(path)), str(source))
            if isinstance(doc, FileProblem):
                add({"source": doc.source}, ERROR if doc.is_error else SKIPPED, doc.reason)
                continue
            rows = chunk_document(doc, self.tokenizer, self.size, self.overlap)
            if self.stored.get(doc.source) == fingerprint({r["id"] for r in rows}):
                add({"source": doc.source}, UNCHANGED)
                continue
            for r in rows:
                add(r, OK)
        return out


class EmbedChunks:
    """One embedding model per actor; non-chunk rows (status != ok) pass through with a zero vector."""

    def __init__(self, embedder: str | None, device: str, batch_size: int, threads: int) -> None:
        import torch

        from retrieval.embedder import SentenceTransformerEmbedder

        torch.set_num_threads(max(1, threads))
        self.embedder = SentenceTransformerEmbedder(embedder, device=device, batch_size=batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["status"]) == OK
        vectors = np.zeros((len(ok), self.embedder.dim), dtype=np.float32)
        if ok.any():
            rows = [
                {"title": str(t), "text": str(x)}
                for t, x in zip(batch["title"][ok], batch["text"][ok], strict=True)
            ]
            vectors[ok] = self.embedder.embed([embed_input(r) for r in rows])
        return {**batch, "vector": vectors}


class WriteChunks:
    """Upsert embedded chunks from a worker (Milvus server only); returns just what the driver must track."""

    def __init__(self, uri: str, token: str | None, collection: str, timeout: float) -> None:
        from retrieval.store import MilvusStore

        self.store = MilvusStore(uri, token, timeout, lite=False)
        self.collection = collection

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.store.upsert(self.collection, rows_to_insert(batch))
        return {c: batch[c] for c in ("id", "source", "status", "reason", "content_hash")}


def rows_to_insert(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    ok = np.flatnonzero(np.asarray(batch["status"]) == OK)
    return [
        {
            "id": str(batch["id"][i]),
            "source": str(batch["source"][i]),
            "chunk": int(batch["chunk"][i]),
            "title": str(batch["title"][i]),
            "text": str(batch["text"][i]),
            "content_hash": str(batch["content_hash"][i]),
            "vector": np.asarray(batch["vector"][i], dtype=np.float32).tolist(),
        }
        for i in ok
    ]


def _pool(low: int, high: int) -> Any:
    import ray.data

    return ray.data.ActorPoolStrategy(min_size=low, max_size=high)


def ingest_with_ray(retriever: Retriever, paths: list[str], name: str) -> IngestReport:
    """Run the pipeline on the connected (or a new local) Ray cluster and return the same report as ingest_paths."""
    import time

    import ray

    from core.ray_conn import connect
    from retrieval.retriever import IngestReport

    start = time.perf_counter()
    cfg, store = retriever.cfg, retriever.store
    report = IngestReport(name)
    files, problems = discover(paths, cfg.root())
    for p in problems:
        report.add_problem(p)
    emb = retriever.embedder
    store.ensure(name, emb.name, emb.dim)
    retriever._checked.add(name)
    existing = store.ids_by_source(name, [s for _, s in files])
    if files:
        connect()
        threads = cfg.embed_threads or max(1, (os.cpu_count() or 1) // cfg.ray_actors)
        items = [{"path": os.path.abspath(p), "source": s} for p, s in files]
        blocks = max(1, min(len(items), -(-len(items) // cfg.ray_files_per_task)))
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        ds = ds.map_batches(
            ChunkFiles,
            fn_constructor_kwargs={
                "embedder": cfg.embedder, "size": cfg.chunk_tokens, "overlap": cfg.chunk_overlap,
                "stored": {s: fingerprint(ids) for s, ids in store.reusable(name, existing).items()},
            },
            batch_size=cfg.ray_files_per_task, compute=_pool(1, cfg.ray_actors), num_cpus=1,
        )  # fmt: skip
        ds = ds.map_batches(
            EmbedChunks,
            fn_constructor_kwargs={
                "embedder": cfg.embedder, "device": cfg.device, "batch_size": cfg.embed_batch_size, "threads": threads,
            },
            batch_size=cfg.embed_batch_size, compute=_pool(cfg.ray_actors, cfg.ray_actors), num_cpus=1,
        )  # fmt: skip
        if not cfg.is_lite():
            ds = ds.map_batches(
                WriteChunks,
                fn_constructor_kwargs={
                    "uri": cfg.resolved_uri(), "token": cfg.token, "collection": name, "timeout": cfg.connect_timeout_s,
                },
                batch_size=cfg.write_batch_size, compute=_pool(1, cfg.ray_actors), num_cpus=0.5,
            )  # fmt: skip
        written: dict[str, set[str]] = {}
        versions: dict[str, str] = {}
        for batch in ds.iter_batches(batch_size=cfg.write_batch_size, batch_format="numpy"):
            if cfg.is_lite():
                store.upsert(name, rows_to_insert(batch), cfg.write_batch_size)
            for cid, source, status, reason, version in zip(
                batch["id"],
                batch["source"],
                batch["status"],
                batch["reason"],
                batch["content_hash"],
                strict=True,
            ):
                if status == OK:
                    written.setdefault(str(source), set()).add(str(cid))
                    versions[str(source)] = str(version)
                elif status == UNCHANGED:
                    report["unchanged"] += 1
                else:
                    report.add_problem(FileProblem(str(source), str(reason), status == ERROR))
        # every new chunk is in: show the new versions, then drop the old rows
        store.commit(name, versions, emb.dim)
        for source, new_ids in sorted(written.items()):
            report["deleted"] += store.delete_ids(name, sorted(existing.get(source, set()) - new_ids))
            report["files"] += 1
            report["chunks"] += len(new_ids)
    report["seconds"] = round(time.perf_counter() - start, 3)
    return report
