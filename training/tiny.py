"""A tiny Llama-architecture model and BPE tokenizer, built deterministically by the project itself.

Nothing can be downloaded here, yet tests and the demo need a real model that transformers, PEFT, bitsandbytes
and vLLM all load. This builds one (about 1M parameters, random weights, a byte-level BPE tokenizer trained on
the example corpus, and a chat template) in a few seconds. Same inputs, same bytes: the output folder carries a
fingerprint and is reused when it matches.

    python -m training tiny --out data/models/tiny-llama [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from core.cli import add_json_flag, emit, log
from core.storage import REPO_ROOT, data_dir

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Dimensions: multiples of 64 keep bitsandbytes' 4-bit blocks and vLLM's CPU attention kernels happy.
ARCH = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "vocab_size": 4096,
}
SEED_TEXT = (
    "The quick brown fox jumps over the lazy dog. Question: what is the procedure? Answer: follow the manual. "
    "Safety first: check the pressure, the valve, the pump and the filter before you start the machine. "
)
VERSION = "2"


def default_dir() -> Path:
    return data_dir() / "models" / "tiny-llama"


def corpus_files() -> list[Path]:
    ex = REPO_ROOT / "examples"
    return sorted(p for p in ex.rglob("*") if p.suffix in {".md", ".txt", ".jsonl"} and p.is_file())


def fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256(json.dumps({"arch": ARCH, "template": CHAT_TEMPLATE, "v": VERSION}).encode())
    for p in files:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_tokenizer(files: list[Path]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=ARCH["vocab_size"],
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [SEED_TEXT] + [p.read_text(errors="ignore") for p in files]
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>", "</s>"],
        model_max_length=ARCH["max_position_embeddings"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(out: Path, force: bool = False) -> dict:
    """Build (or reuse) the tiny model in `out`; return a summary."""
    files = corpus_files()
    fp = fingerprint(files)
    stamp = out / "tiny.json"
    if not force and stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fp:
        return {**json.loads(stamp.read_text()), "path": str(out), "reused": True}

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(files)
    torch.manual_seed(0)
    config = LlamaConfig(
        # Embedding rows padded to a multiple of 64 (kernel-friendly); extra rows are never produced by the tokenizer.
        **{**ARCH, "vocab_size": -(-len(tokenizer) // 64) * 64},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    summary = {
        "fingerprint": fp,
        "parameters": params,
        "vocab_size": len(tokenizer),
        "corpus_files": len(files),
    }
    stamp.write_text(json.dumps(summary, indent=2))
    return {**summary, "path": str(out), "reused": False}


def random_adapter(
    model_dir: Path, out: Path, seed: int, rank: int = 8, targets: list[str] | str | None = None
) -> Path:
    """A real PEFT LoRA adapter (safetensors; attention projections unless `targets` says otherwise, e.g.
    "all-linear" as the trainer's default configs) with random non-zero lora_B, so it changes the model's output:
    for serving tests and benchmarks that need many distinct adapters without training."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    targets = targets or ["q_proj", "k_proj", "v_proj", "o_proj"]
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft.save_pretrained(out, safe_serialization=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: data/models/tiny-llama)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    out = (args.out or default_dir()).resolve()
    log(f"building tiny model in {out}")
    result = build(out, force=args.force)
    emit(
        result,
        args.json,
        lambda r: (
            f"tiny model at {r['path']}: {r['parameters']:,} parameters, vocab {r['vocab_size']}"
            + (" (reused)" if r["reused"] else "")
        ),
    )
    return 0


if __name__ == "__main__":
    import sys

    from core.cli import run_cli

    sys.exit(run_cli(main))
