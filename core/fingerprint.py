"""Identity of a base model, so an adapter stays with the base it was trained on.

A path says where a model is, not what it is: the same folder can be rebuilt with other weights, and two
folders can hold one model. Models this project builds or imports carry a fingerprint in a stamp file
(`import.json` from `training import-gguf`, `tiny.json` from `training tiny`); any other local folder is
identified by its config and the names and sizes of its weight files (cheap: weights are not read); a hub id
by the id itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

STAMP_FILES = ("import.json", "tiny.json")


def is_hub_id(model: str | Path) -> bool:
    """'org/name' that is not a local path: what from_pretrained would fetch from the Hub (one rule everywhere)."""
    text = str(model)
    return (
        not Path(text).expanduser().exists() and not text.startswith(("/", ".", "~")) and text.count("/") == 1
    )


def model_fingerprint(model: str | Path) -> str:
    """A short stable id of the base model at `model` (a local folder or a hub id)."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return "hub-" + hashlib.sha256(str(model).encode()).hexdigest()[:12]
    for stamp in STAMP_FILES:
        try:
            fp = json.loads((path / stamp).read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            fp = None
        if fp:
            return str(fp)
    h = hashlib.sha256()
    if (path / "config.json").is_file():
        h.update((path / "config.json").read_bytes())
    for f in sorted(path.glob("*.safetensors")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]
