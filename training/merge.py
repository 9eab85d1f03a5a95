"""`python -m training merge --adapter NAME_OR_PATH [--store ROOT] --out DIR`: fold a LoRA adapter into its
base for engines without LoRA support. QLoRA adapters merge into the unquantised (bf16/fp32) base, so the
result is a plain full-precision model folder (safetensors + tokenizer).

The base must be the one the adapter was trained on (its recorded `base_fingerprint`): a LoRA delta folded into
another base of the same shape gives a model that loads fine and answers garbage. `--force` skips the check.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core import storage
from core.adapter_store import (
    METADATA,
    AdapterInfo,
    AdapterStore,
    check_compatible,
    read_metadata,
    validate_adapter_dir,
)
from core.cli import add_json_flag, emit, log
from core.errors import UserError
from core.fingerprint import model_fingerprint


def find_adapter(ref: str, store_root: str | None) -> Path:
    """A folder path, or a name in the adapter store."""
    p = Path(ref).expanduser()
    if p.is_dir():
        validate_adapter_dir(p)
        return p.resolve()
    return AdapterStore(store_root or storage.data_dir() / "adapters").local_path(ref)


def check_base(adapter_dir: Path, base: str) -> None:
    """Refuse a base other than the one the adapter records (an adapter recording none cannot be checked)."""
    meta_file = adapter_dir / METADATA
    meta = read_metadata(meta_file.read_text(), str(meta_file)) if meta_file.is_file() else {}
    info = AdapterInfo(name=str(meta.get("name") or adapter_dir.name), uri=str(adapter_dir), metadata=meta)
    try:
        check_compatible(info, model_fingerprint(base), base, role="merge base")
    except UserError as exc:
        raise UserError(f"refusing to merge: {exc}; pass --base with its own base, or --force") from None


def merge(
    adapter_dir: Path, out: Path, base: str | None = None, dtype: str = "auto", force: bool = False
) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = base or cfg.get("base_model_name_or_path")
    if not base:
        raise UserError(f"{adapter_dir}: adapter_config.json names no base model; pass --base")
    if not Path(base).exists() and base.startswith(("/", ".", "~")):
        raise UserError(f"base model {base} does not exist; pass --base PATH")
    if force:
        log(f"--force: not checking that {adapter_dir} was trained on {base}")
    else:
        check_base(adapter_dir, base)
    torch_dtype = {"auto": "auto", "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    log(f"merging {adapter_dir} into {base}")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return {"out": str(out), "base_model": base, "adapter": str(adapter_dir)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training merge", description=__doc__.split("\n\n")[0])
    p.add_argument("--adapter", required=True, help="adapter name in the store, or an adapter folder")
    p.add_argument("--store", help="adapter store root (default data_dir()/adapters)")
    p.add_argument("--out", required=True, type=Path, help="folder for the merged model")
    p.add_argument("--base", help="base model (default: the adapter's base_model_name_or_path)")
    p.add_argument(
        "--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="dtype of the merged weights"
    )
    p.add_argument(
        "--force", action="store_true", help="merge even if the adapter records another (or no) base model"
    )
    add_json_flag(p)
    args = p.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        raise UserError(f"--out {args.out} is not empty; pick a new folder")
    adapter = find_adapter(args.adapter, args.store)
    result = merge(adapter, args.out.resolve(), args.base, args.dtype, force=args.force)
    emit(result, args.json, lambda r: f"merged model written to {r['out']}")
    return 0
