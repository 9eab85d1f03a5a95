"""Milvus access for retrieval: one client (Lite file or server), the collection schema, and the searches.

The same code serves Milvus Lite and a Milvus server. A collection records the embedder name and dimension
that built it (collection properties) so a different model is refused instead of returning nonsense.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlparse

from core.errors import UserError
from core.net import probe
from retrieval.filters import quote
from retrieval.versions import CHUNKS_ONLY, MARKER_CHUNK, PROP_VERSIONED, chunks_only, marker_id, marker_row

PROP_EMBEDDER = "retrieval.embedder"
PROP_DIM = "retrieval.dim"
FIELDS = ("id", "source", "chunk", "title", "text", "content_hash")
QUERY_LIMIT = 16384  # Milvus caps one query's result window at 16384 rows
MAX_TEXT = 65535


def check_reachable(uri: str, timeout: float) -> None:
    """Fail fast on a dead server: pymilvus' own connect can wait far longer than a user will."""
    parsed = urlparse(uri)
    host = parsed.hostname or "localhost"
    port = parsed.port or (443 if parsed.scheme == "https" else 19530)
    probe(host, port, timeout, f"Milvus at {uri}", "start the server or fix --uri")


class _Capture(logging.Handler):
    """Collects what Milvus Lite logs (with a traceback) when it cannot open a file, for one clean message."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.messages.append(str(exc) if exc else record.getMessage())


def open_client(uri: str, token: str | None, timeout: float, lite: bool) -> Any:
    from pymilvus import MilvusClient

    if not lite:
        check_reachable(uri, timeout)
    lite_log = logging.getLogger("milvus_lite.server_manager")
    capture, propagate = _Capture(), lite_log.propagate
    lite_log.addHandler(capture)
    lite_log.propagate = False
    try:
        return MilvusClient(
            uri=uri, token=token or "", timeout=max(timeout, 30.0)
        )  # reachable already; allow a busy server
    except Exception as exc:  # noqa: BLE001 - every connect failure is reported as one clear line
        exc = capture.messages[-1] if capture.messages else exc
        hint = (
            "Milvus Lite lets one process open a file at a time: stop the process holding it "
            "(e.g. a running server) or use a Milvus server URI"
            if lite
            else "check the URI and --token"
        )
        raise UserError(f"cannot open Milvus at {uri}: {str(exc)[:200]}; {hint}") from None
    finally:
        lite_log.removeHandler(capture)
        lite_log.propagate = propagate


class CollectionNotFound(UserError):
    """A search or delete named a collection that does not exist (HTTP 404 at the serving layer)."""


class MilvusStore:
    """Thread-safe wrapper: every client call happens under one lock (pymilvus clients are not re-entrant)."""

    def __init__(self, uri: str, token: str | None = None, timeout: float = 3.0, lite: bool = True) -> None:
        self.uri = uri
        self.client = open_client(uri, token, timeout, lite)
        self.lock = threading.RLock()
        self._loaded: set[str] = set()
        self._versioned: dict[str, bool] = {}

    # -- collections ---------------------------------------------------------------------------------
    def collections(self) -> list[str]:
        with self.lock:
            return sorted(self.client.list_collections())

    def exists(self, name: str) -> bool:
        with self.lock:
            return bool(self.client.has_collection(name))

    def require(self, name: str) -> None:
        if not self.exists(name):
            have = ", ".join(self.collections()) or "none"
            raise CollectionNotFound(
                f"collection {name!r} does not exist at {self.uri} (collections: {have}); ingest first"
            )
        self._ensure_loaded(name)

    def _reloaded(self, name: str, call: Any) -> Any:
        """Run `call()`; if the server says the collection is released (a restarted Milvus Lite server starts with
        every collection released), load it again and retry once. Other errors pass through."""
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - pymilvus raises MilvusException; matched by its message
            if "released" not in str(exc) and "not loaded" not in str(exc):
                raise
        with self.lock:
            self._loaded.discard(name)
            self.client.load_collection(name)
            self._loaded.add(name)
        return call()

    def _ensure_loaded(self, name: str) -> None:
        if name in self._loaded:
            return
        with self.lock:
            self.client.load_collection(name)  # a reopened Lite file starts with collections released
            self._loaded.add(name)

    def ensure(self, name: str, embedder: str, dim: int) -> None:
        """Create the collection for this embedder, or check an existing one was built by it."""
        if self.exists(name):
            self.check_embedder(name, embedder, dim)
            self._ensure_loaded(name)
            return
        from pymilvus import DataType, Function, FunctionType

        with self.lock:
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("source", DataType.VARCHAR, max_length=2048)
            schema.add_field("chunk", DataType.INT64)
            schema.add_field("title", DataType.VARCHAR, max_length=2048)
            schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT, enable_analyzer=True)
            schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="text_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["text"],
                    output_field_names=["sparse"],
                )
            )
            index = self.client.prepare_index_params()
            index.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
            self.client.create_collection(
                name,
                schema=schema,
                index_params=index,
                properties={PROP_EMBEDDER: embedder, PROP_DIM: str(dim), PROP_VERSIONED: "1"},
            )
            self._loaded.add(name)
            self._versioned[name] = True

    def is_versioned(self, name: str) -> bool:
        """True for collections with commit markers (retrieval.versions); older ones show every row."""
        if name not in self._versioned:
            with self.lock:
                props = self.client.describe_collection(name).get("properties") or {}
            self._versioned[name] = props.get(PROP_VERSIONED) == "1"
        return self._versioned[name]

    def recorded_embedder(self, name: str) -> tuple[str | None, int | None]:
        with self.lock:
            desc = self.client.describe_collection(name)
        props = desc.get("properties") or {}
        dim = props.get(PROP_DIM)
        return props.get(PROP_EMBEDDER), int(dim) if dim else None

    def check_embedder(self, name: str, embedder: str, dim: int) -> None:
        rec_name, rec_dim = self.recorded_embedder(name)
        if rec_name is None:
            raise UserError(
                f"collection {name!r} was not built by this tool (no embedder recorded); use another name"
            )
        if rec_name != embedder or rec_dim != dim:
            raise UserError(
                f"collection {name!r} was built with embedder {rec_name!r} ({rec_dim}-d) but this run uses "
                f"{embedder!r} ({dim}-d); use the same embedder or another collection"
            )

    # -- rows ----------------------------------------------------------------------------------------
    def ids_by_source(self, name: str, sources: list[str]) -> dict[str, set[str]]:
        """Existing chunk ids of each source (sources absent from the collection are absent here)."""
        out: dict[str, set[str]] = {}
        for i in range(0, len(sources), 64):
            expr = "source in [" + ", ".join(quote(s) for s in sources[i : i + 64]) + f"] and {CHUNKS_ONLY}"
            for row in self._query_all(name, expr, ["id", "source"]):
                out.setdefault(row["source"], set()).add(row["id"])
        return out

    def committed(self, name: str, sources: list[str]) -> dict[str, str]:
        """source -> committed content_hash, for the sources that have a commit marker."""
        out: dict[str, str] = {}
        for i in range(0, len(sources), 64):
            expr = (
                f"chunk == {MARKER_CHUNK} and source in ["
                + ", ".join(quote(s) for s in sources[i : i + 64])
                + "]"
            )
            for row in self._query_all(name, expr, ["source", "content_hash"]):
                out[row["source"]] = row["content_hash"]
        return out

    def reusable(self, name: str, existing: dict[str, set[str]]) -> dict[str, set[str]]:
        """The part of `existing` (source -> stored ids) that an "unchanged" check may trust: sources with a
        committed version. Rows a crash left before their commit do not count, so that source is written and
        committed again. Unversioned collections: all of it."""
        if not self.is_versioned(name):
            return existing
        committed = self.committed(name, list(existing))
        return {s: ids for s, ids in existing.items() if s in committed}

    def commit(self, name: str, versions: dict[str, str], dim: int) -> None:
        """Make these versions the visible ones: one marker row per source (each row's upsert is atomic)."""
        if versions and self.is_versioned(name):
            with self.lock:
                self.client.upsert(name, [marker_row(s, h, dim) for s, h in sorted(versions.items())])

    def _query_all(self, name: str, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        with self.lock:
            rows = self._reloaded(
                name, lambda: self.client.query(name, filter=expr, output_fields=fields, limit=QUERY_LIMIT)
            )
            if len(rows) < QUERY_LIMIT:
                return list(rows)
            it = self.client.query_iterator(name, batch_size=4096, filter=expr, output_fields=fields)
            rows = []
            while batch := it.next():
                rows.extend(batch)
            it.close()
            return rows

    def upsert(self, name: str, rows: list[dict[str, Any]], batch: int = 512) -> None:
        for i in range(0, len(rows), batch):
            with self.lock:
                self.client.upsert(name, rows[i : i + batch])

    def delete_ids(self, name: str, ids: list[str], batch: int = 1024) -> int:
        for i in range(0, len(ids), batch):
            with self.lock:
                self.client.delete(name, ids=ids[i : i + batch])
        return len(ids)

    def delete_source(self, name: str, source: str) -> int:
        """Hide the source at once (its marker first), then remove its chunks; returns the chunks removed."""
        ids = self.ids_by_source(name, [source]).get(source, set())
        with self.lock:
            self.client.delete(name, ids=[marker_id(source)])
        return self.delete_ids(name, sorted(ids))

    def count(self, name: str) -> int:
        """Chunk rows stored (commit markers not counted; uncommitted leftovers are)."""
        self._ensure_loaded(name)
        with self.lock:
            rows = self.client.query(name, filter=CHUNKS_ONLY, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    # -- search --------------------------------------------------------------------------------------
    def search(
        self, name: str, mode: str, vector: list[float] | None, query: str, top_k: int, expr: str, rrf_k: int
    ) -> list[dict[str, Any]]:
        """Raw hits as {id, distance, entity}; BM25 distances are made positive (Milvus Lite negates them)."""
        return self._reloaded(name, lambda: self._search(name, mode, vector, query, top_k, expr, rrf_k))

    def _search(
        self, name: str, mode: str, vector: list[float] | None, query: str, top_k: int, expr: str, rrf_k: int
    ) -> list[dict[str, Any]]:
        from pymilvus import AnnSearchRequest, RRFRanker

        fields = ["source", "chunk", "title", "text", "content_hash"]
        expr = chunks_only(expr)
        with self.lock:
            if mode == "dense":
                res = self.client.search(
                    name, data=[vector], anns_field="vector", limit=top_k, filter=expr, output_fields=fields,
                    search_params={"metric_type": "COSINE"},
                )  # fmt: skip
            elif mode == "bm25":
                res = self.client.search(
                    name, data=[query], anns_field="sparse", limit=top_k, filter=expr, output_fields=fields,
                    search_params={"metric_type": "BM25"},
                )  # fmt: skip
                return [{**h, "distance": abs(h["distance"])} for h in res[0]]
            else:
                depth = max(
                    top_k * 4, 20
                )  # each side contributes a deeper list than we return, as RRF expects
                reqs = [
                    AnnSearchRequest(data=[vector], anns_field="vector", param={"metric_type": "COSINE"}, limit=depth, expr=expr),
                    AnnSearchRequest(data=[query], anns_field="sparse", param={"metric_type": "BM25"}, limit=depth, expr=expr),
                ]  # fmt: skip
                res = self.client.hybrid_search(
                    name, reqs, ranker=RRFRanker(rrf_k), limit=top_k, output_fields=fields
                )
        return list(res[0])

    def close(self) -> None:
        with self.lock:
            self.client.close()
