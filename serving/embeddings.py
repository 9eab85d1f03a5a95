"""`POST /v1/embeddings`: the retriever's embedder behind the OpenAI embeddings API, so clients can embed
queries or documents exactly as the collections were embedded (same model, unit-length vectors)."""

from __future__ import annotations

import base64
import struct
from typing import Any

from serving.protocol import APIError, EmbeddingRequest


async def embeddings_response(req: EmbeddingRequest, retriever: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI response body; APIError 404 for another model, 400 for input or dimensions it cannot serve."""
    if req.model != info["name"]:
        raise APIError(
            404,
            f"embedding model {req.model!r} not served; this server embeds with {info['name']!r}",
            param="model",
            code="model_not_found",
        )
    if req.dimensions is not None and req.dimensions != info["dim"]:
        raise APIError(
            400, f"dimensions: {info['name']} gives {info['dim']}-d vectors only", param="dimensions"
        )
    out = await retriever.embed.remote(req.texts())
    data = []
    for i, vector in enumerate(out["vectors"]):
        embedding: Any = vector
        if req.encoding_format == "base64":  # little-endian float32, as OpenAI's clients decode it
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    usage = {"prompt_tokens": out["tokens"], "total_tokens": out["tokens"]}
    return {"object": "list", "data": data, "model": info["name"], "usage": usage}
