"""Reader-side atomic replacement of a source's chunks: one commit-marker row per source.

Chunk ids include the document's content hash, so a new version's rows never overwrite the old version's. Which
version of a source is visible is named by a single marker row (chunk = -1, content_hash = the committed version)
upserted after every chunk of the new version is in: that one-row upsert is the commit. Searches leave marker
rows out and drop hits whose content_hash is not their source's marker, so a crash at any point shows either the
complete old version or the complete new one, never a mix and never half a document. The old version's rows are
deleted after the commit; a crash before that leaves only invisible rows, which the next ingest removes.

Collections made before markers existed (no `retrieval.versioned` property) keep the old rule: every row visible.
"""

from __future__ import annotations

import hashlib
from typing import Any

MARKER_CHUNK = -1
PROP_VERSIONED = "retrieval.versioned"
CHUNKS_ONLY = "chunk >= 0"


def marker_id(source: str) -> str:
    return hashlib.sha256(f"\x00commit\x00{source}".encode()).hexdigest()


def marker_row(source: str, content_hash: str, dim: int) -> dict[str, Any]:
    """The commit marker of `source` at version `content_hash` (never returned by searches)."""
    return {
        "id": marker_id(source),
        "source": source,
        "chunk": MARKER_CHUNK,
        "title": "",
        "text": "commit marker",
        "content_hash": content_hash,
        "vector": [1.0] + [0.0] * (dim - 1),  # any unit vector: COSINE needs a non-zero one
    }


def chunks_only(expr: str) -> str:
    """A search filter that also leaves the marker rows out."""
    return f"({expr}) and {CHUNKS_ONLY}" if expr else CHUNKS_ONLY


def visible(hits: list[dict[str, Any]], committed: dict[str, str]) -> list[dict[str, Any]]:
    """Hits of each source's committed version only (raw Milvus hits with entity.source/content_hash)."""
    return [h for h in hits if committed.get(h["entity"]["source"]) == h["entity"].get("content_hash")]
