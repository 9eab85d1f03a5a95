"""What `GET /v1/models` lists: the base, every adapter trained on it (current version), the routes, and the
retriever's embedder. `root` is where each comes from: a folder or hub id, an adapter version's folder, the
adapter a route uses, the embedder's name."""

from __future__ import annotations

import time
from typing import Any

from core.adapter_store import AdapterInfo
from serving.config import ServeConfig


def model_cards(
    cfg: ServeConfig, base: str, adapters: list[AdapterInfo], embedder: dict[str, Any] | None
) -> list[dict[str, Any]]:
    card = {"object": "model", "created": int(time.time()), "owned_by": "domain-expert"}
    data = [
        {
            **card,
            "id": base,
            "root": cfg.model.resolved_path(),  # a real folder or hub id, never the config's data: URI
            "parent": None,
            "max_model_len": cfg.model.max_model_len,
        }
    ]
    data += [{**card, "id": a.name, "root": a.uri, "parent": base, "version": a.version} for a in adapters]
    data += [
        {**card, "id": name, "root": r.adapter or base, "parent": base, "route": r.model_dump()}
        for name, r in cfg.routes.items()
    ]
    if embedder is not None:
        data.append(
            {
                **card,
                "id": embedder["name"],
                "root": embedder["name"],
                "parent": None,
                "dimensions": embedder["dim"],
            }
        )
    return data
