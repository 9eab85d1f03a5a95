"""Token-aware chunking with overlap, and content-derived chunk ids.

Windows are counted in the embedder's own tokens, so a chunk never silently exceeds what the model reads.
Ids hash (source, chunk index, title, text): an unchanged file yields the same ids (re-ingest is a no-op) and
any edit yields new ids, which is what lets a changed file be replaced without a moment of missing chunks.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from retrieval.documents import Document


class Tokenizer(Protocol):
    """The slice of a Hugging Face fast tokenizer the chunker needs (character offsets per token)."""

    def __call__(self, text: str, **kwargs: Any) -> Any: ...


def chunk_id(source: str, index: int, title: str, text: str, version: str) -> str:
    """Content-derived and per document version, so a new version never overwrites the rows the old one shows."""
    h = hashlib.sha256("\x00".join((source, str(index), title, text, version)).encode("utf-8"))
    return h.hexdigest()[:32]


def fingerprint(ids: list[str] | set[str]) -> str:
    """One string standing for a source's set of chunk ids (used to detect unchanged files cheaply)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def split_tokens(text: str, tokenizer: Tokenizer, size: int, overlap: int) -> list[str]:
    """Cut `text` into windows of at most `size` tokens, consecutive windows sharing `overlap` tokens."""
    enc = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
    )
    offsets = enc["offset_mapping"]
    if not offsets:
        return []
    step = size - overlap
    pieces: list[str] = []
    start = 0
    while start < len(offsets):
        end = min(start + size, len(offsets))
        piece = text[offsets[start][0] : offsets[end - 1][1]].strip()
        if piece:
            pieces.append(piece)
        if end == len(offsets):
            break
        start += step
    return pieces


def chunk_document(doc: Document, tokenizer: Tokenizer, size: int, overlap: int) -> list[dict[str, Any]]:
    """Rows ready to embed: id, source, chunk, title, text, content_hash."""
    rows: list[dict[str, Any]] = []
    for heading, text in doc.sections:
        title = heading or doc.title
        for piece in split_tokens(text, tokenizer, size, overlap):
            index = len(rows)
            rows.append(
                {
                    "id": chunk_id(doc.source, index, title, piece, doc.content_hash),
                    "source": doc.source,
                    "chunk": index,
                    "title": title[:500],
                    "text": piece,
                    "content_hash": doc.content_hash,
                }
            )
    return rows


def embed_input(row: dict[str, Any]) -> str:
    """What the embedder sees: the heading path gives a short chunk its context."""
    return f"{row['title']}\n{row['text']}" if row.get("title") else row["text"]
