"""The retrieval API used by the CLI and the serving layer: ingest, search, delete over one Milvus collection.

Replacement is atomic for readers (retrieval.versions): a file's new chunks get ids of their own version, are all
embedded and upserted, then one commit-marker row per source makes them the visible version, and only then are
the old rows deleted. A crash at any point shows the complete old version or the complete new one.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.faults import kill_point
from retrieval.chunking import chunk_document, embed_input, fingerprint
from retrieval.config import RetrievalConfig
from retrieval.documents import (
    Document,
    FileProblem,
    _markdown,
    discover,
    load,
    source_name,
    source_problem,
)
from retrieval.embedder import Embedder, SentenceTransformerEmbedder
from retrieval.filters import build_filter
from retrieval.store import MilvusStore
from retrieval.versions import visible

MODES = ("hybrid", "dense", "bm25")
PROGRESS_MIN_FILES = 10


@dataclass
class Hit:
    """One retrieved chunk. `score`: RRF score (hybrid), cosine similarity (dense) or BM25 score."""

    source: str
    chunk: int
    text: str
    score: float
    title: str | None
    id: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class IngestReport(dict):
    """Summary of one ingest (a dict, so it is JSON as is): files/chunks written, unchanged, skipped, errors."""

    def __init__(self, collection: str) -> None:
        super().__init__(
            collection=collection,
            files=0,
            unchanged=0,
            chunks=0,
            deleted=0,
            skipped=[],
            errors=[],
            seconds=0.0,
        )

    def add_problem(self, p: FileProblem) -> None:
        key = "errors" if p.is_error else "skipped"
        self[key].append({"source": p.source, "reason": p.reason})

    @property
    def ingested_anything(self) -> bool:
        return self["files"] + self["unchanged"] > 0


class Retriever:
    """Owns one Milvus client and one embedder (loaded on first use); safe to call from many threads."""

    def __init__(
        self,
        cfg: RetrievalConfig | None = None,
        embedder: Embedder | None = None,
        store: MilvusStore | None = None,
    ) -> None:
        """`embedder`/`store` may be passed in to share one model or one Milvus Lite client between retrievers."""
        self.cfg = cfg or RetrievalConfig()
        self.store = store or MilvusStore(
            self.cfg.resolved_uri(), self.cfg.token, self.cfg.connect_timeout_s, lite=self.cfg.is_lite()
        )
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._checked: set[str] = set()

    @property
    def embedder(self) -> Embedder:
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = SentenceTransformerEmbedder(
                    self.cfg.embedder,
                    device=self.cfg.device,
                    batch_size=self.cfg.embed_batch_size,
                    threads=self.cfg.embed_threads,
                )
            return self._embedder

    def collections(self) -> list[str]:
        return self.store.collections()

    def close(self) -> None:
        self.store.close()

    # -- search --------------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        top_k: int = 5,
        filter: str | dict[str, Any] | list[str] | None = None,  # noqa: A002 - the documented API name
        mode: str = "hybrid",
        collection: str | None = None,
        vector: list[float] | None = None,
    ) -> list[Hit]:
        """Top hits for `query`; `vector` is its embedding when the caller already has it (batched embedding)."""
        if not isinstance(query, str) or not query.strip():
            raise UserError("the search query is empty")
        if not isinstance(top_k, int) or not 1 <= top_k <= 1000:
            raise UserError(f"top_k must be a whole number from 1 to 1000, got {top_k!r}")
        if mode not in MODES:
            raise UserError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        name = collection or self.cfg.collection
        expr = build_filter(filter)
        self.store.require(name)
        self._check(name)
        if mode == "bm25":
            vector = None
        elif vector is None:
            vector = self.embedder.embed([query])[0].tolist()
        raw = self._visible_hits(name, mode, vector, query, top_k, expr)
        return [
            Hit(
                source=h["entity"]["source"],
                chunk=int(h["entity"]["chunk"]),
                text=h["entity"]["text"],
                score=float(h["distance"]),
                title=h["entity"].get("title") or None,
                id=str(h["id"]),
            )
            for h in raw
        ]

    def _visible_hits(
        self, name: str, mode: str, vector: list[float] | None, query: str, top_k: int, expr: str
    ) -> list[dict[str, Any]]:
        """Raw hits of each source's committed version only (retrieval.versions); over-fetches so that hits of
        an uncommitted or superseded version, dropped here, do not shrink the answer."""
        if not self.store.is_versioned(name):
            return self.store.search(name, mode, vector, query, top_k, expr, self.cfg.rrf_k)
        raw = self.store.search(name, mode, vector, query, min(2 * top_k, 1000), expr, self.cfg.rrf_k)
        committed = self.store.committed(name, sorted({h["entity"]["source"] for h in raw}))
        return visible(raw, committed)[:top_k]

    def _check(self, name: str) -> None:
        if name not in self._checked:
            self.store.check_embedder(name, self.embedder.name, self.embedder.dim)
            self._checked.add(name)

    # -- ingest --------------------------------------------------------------------------------------
    def ingest_paths(
        self, paths: list[str], collection: str | None = None, ray: bool = False
    ) -> IngestReport:
        """Ingest files and folders; `ray=True` parses and embeds on Ray Data (see retrieval.ray_ingest)."""
        if not paths:
            raise UserError("give at least one file or folder to ingest")
        if ray:
            from retrieval.ray_ingest import ingest_with_ray

            return ingest_with_ray(self, [str(p) for p in paths], collection or self.cfg.collection)
        files, problems = discover([str(p) for p in paths], self.cfg.root())

        def docs() -> Iterator[Document | FileProblem]:
            yield from problems
            for path, source in files:
                yield load(path, source)

        return self._ingest(docs(), collection or self.cfg.collection, total=len(files) + len(problems))

    def ingest_texts(self, docs: list[dict[str, Any]], collection: str | None = None) -> IngestReport:
        """Ingest in-memory documents {"source", "text", "title"?}; same chunk, id and replace rules as files."""
        loaded: list[Document | FileProblem] = []
        for i, d in enumerate(docs):
            source, text, title = (
                (d.get("source"), d.get("text"), d.get("title")) if isinstance(d, dict) else (None,) * 3
            )
            if not isinstance(source, str) or not source.strip() or not isinstance(text, str):
                loaded.append(
                    FileProblem(f"docs[{i}]", "needs a non-empty 'source' and a 'text' string", True)
                )
            elif (why := source_problem(source)) is not None:
                loaded.append(FileProblem(f"docs[{i}]", why, False))
            elif not text.strip():
                loaded.append(FileProblem(source, "empty text", False))
            else:
                doc_title, sections = _markdown(text, title or Path(source).stem)
                digest = hashlib.sha256(f"{title}\x00{text}".encode()).hexdigest()
                loaded.append(Document(source, title or doc_title, sections, digest))
        latest = {d.source: d for d in loaded}  # the same source twice: the last one wins, as with files
        return self._ingest(iter(latest.values()), collection or self.cfg.collection, total=len(latest))

    def delete_source(self, source: str, collection: str | None = None) -> int:
        """Remove every chunk of one source; a path to an existing file is normalised like at ingest."""
        if not isinstance(source, str) or not source.strip():
            raise UserError("give the source to delete (as stored, e.g. docs/manuals/x.md)")
        name = collection or self.cfg.collection
        self.store.require(name)
        if Path(source).exists():
            source = source_name(Path(source), self.cfg.root())
        return self.store.delete_source(name, source)

    def _ingest(self, items: Iterable[Document | FileProblem], name: str, total: int) -> IngestReport:
        from tqdm import tqdm

        start = time.perf_counter()
        report = IngestReport(name)
        group: list[Document] = []
        group_chunks = 0
        target = self.cfg.embed_batch_size * 4
        with tqdm(
            total=total,
            desc=f"ingest {name}",
            unit="file",
            file=sys.stderr,
            disable=total < PROGRESS_MIN_FILES,
        ) as bar:
            for item in items:
                if isinstance(item, FileProblem):
                    report.add_problem(item)
                    bar.update(1)
                    continue
                group.append(item)
                group_chunks += sum(len(t) for _, t in item.sections) // 600 + 1  # rough: ~4 chars/token
                if group_chunks >= target:
                    self._write_group(group, name, report)
                    bar.update(len(group))
                    group, group_chunks = [], 0
            if group:
                self._write_group(group, name, report)
                bar.update(len(group))
        report["seconds"] = round(time.perf_counter() - start, 3)
        return report

    def _write_group(self, docs: list[Document], name: str, report: IngestReport) -> None:
        """Chunk, skip unchanged, embed everything, upsert, and only then delete each source's stale ids."""
        emb = self.embedder
        if name not in self._checked:  # created on the first real document, so a failed ingest leaves nothing
            self.store.ensure(name, emb.name, emb.dim)
            self._checked.add(name)
        existing = self.store.ids_by_source(name, [d.source for d in docs])
        reusable = self.store.reusable(name, existing)
        changed: list[tuple[Document, list[dict[str, Any]]]] = []
        for doc in docs:
            rows = chunk_document(doc, emb.tokenizer, self.cfg.chunk_tokens, self.cfg.chunk_overlap)
            old = reusable.get(doc.source, set())
            if old and fingerprint({r["id"] for r in rows}) == fingerprint(old):
                report["unchanged"] += 1
            else:
                changed.append((doc, rows))
        rows = [r for _, doc_rows in changed for r in doc_rows]
        bs = self.cfg.embed_batch_size
        for i in range(0, len(rows), bs):
            batch = rows[i : i + bs]
            for row, vec in zip(batch, emb.embed([embed_input(r) for r in batch]), strict=True):
                row["vector"] = vec.tolist()
        self.store.upsert(name, rows, self.cfg.write_batch_size)
        kill_point("after-upsert")
        self.store.commit(name, {doc.source: doc.content_hash for doc, _ in changed}, emb.dim)
        for doc, doc_rows in changed:
            stale = existing.get(doc.source, set()) - {r["id"] for r in doc_rows}
            report["deleted"] += self.store.delete_ids(name, sorted(stale))
            report["files"] += 1
            report["chunks"] += len(doc_rows)
