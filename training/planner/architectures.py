"""Decoder dimensions of known models, read from their published `config.json`, and exact parameter counts.

The planner needs dimensions, not weights: parameter counts, LoRA sizes and activation sizes all follow from
hidden size, MLP width, layer count, head counts and vocabulary. Every entry below is copied from the model's
`config.json` on the Hugging Face Hub (URL in `source`); a local model folder is read the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "phi3")


@dataclass(frozen=True)
class Arch:
    """A Llama-style decoder: RMSNorm, GQA attention with RoPE, SwiGLU MLP."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2 puts biases on q/k/v only
    fused: bool = False  # Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj
    head_dim: int | None = None
    source: str = ""

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def linears(self) -> list[tuple[str, int, int]]:
        """(name, in_features, out_features) of every linear layer in one decoder block (the LoRA targets)."""
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.hd, self.kv_heads * self.hd
        if self.fused:
            return [
                ("qkv_proj", h, q + 2 * kv),
                ("o_proj", q, h),
                ("gate_up_proj", h, 2 * i),
                ("down_proj", i, h),
            ]
        return [
            ("q_proj", h, q),
            ("k_proj", h, kv),
            ("v_proj", h, kv),
            ("o_proj", q, h),
            ("gate_proj", h, i),
            ("up_proj", h, i),
            ("down_proj", i, h),
        ]

    def largest_linear(self) -> int:
        return max(fi * fo for _, fi, fo in self.linears())

    def linear_params(self) -> int:
        """Weights of all decoder linear layers: what NF4 quantizes."""
        return self.layers * sum(fi * fo for _, fi, fo in self.linears())

    def other_params(self) -> int:
        """Embeddings, lm_head (unless tied), norms and biases: kept in 16-bit under QLoRA."""
        emb = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        norms = self.layers * 2 * self.hidden + self.hidden
        bias = self.layers * (self.heads + 2 * self.kv_heads) * self.hd if self.qkv_bias else 0
        return emb + norms + bias

    def total_params(self) -> int:
        return self.linear_params() + self.other_params()

    def layer_params(self) -> int:
        return self.linear_params() // self.layers + 2 * self.hidden

    def lora_params(self, r: int) -> int:
        """LoRA on all linear layers: A is r x in, B is out x r, so r * (in + out) per target."""
        return self.layers * sum(r * (fi + fo) for _, fi, fo in self.linears())


def _a(name: str, h: int, i: int, n: int, heads: int, kv: int, vocab: int, src: str, **kw: bool) -> Arch:
    return Arch(
        name, h, i, n, heads, kv, vocab, source=f"https://huggingface.co/{src}/blob/main/config.json", **kw
    )


# Dimensions from each model's config.json (hidden_size, intermediate_size, num_hidden_layers,
# num_attention_heads, num_key_value_heads, vocab_size, tie_word_embeddings).
KNOWN: dict[str, Arch] = {
    a.name: a
    for a in [
        _a("llama-2-7b", 4096, 11008, 32, 32, 32, 32000, "meta-llama/Llama-2-7b-hf"),
        _a("llama-2-13b", 5120, 13824, 40, 40, 40, 32000, "meta-llama/Llama-2-13b-hf"),
        _a("llama-2-70b", 8192, 28672, 80, 64, 8, 32000, "meta-llama/Llama-2-70b-hf"),
        _a("llama-65b", 8192, 22016, 80, 64, 64, 32000, "huggyllama/llama-65b"),
        _a("llama-3-8b", 4096, 14336, 32, 32, 8, 128256, "meta-llama/Meta-Llama-3-8B"),
        _a("llama-3-70b", 8192, 28672, 80, 64, 8, 128256, "meta-llama/Meta-Llama-3-70B"),
        _a("llama-3.1-8b", 4096, 14336, 32, 32, 8, 128256, "meta-llama/Llama-3.1-8B"),
        _a("llama-3.1-70b", 8192, 28672, 80, 64, 8, 128256, "meta-llama/Llama-3.1-70B"),
        _a("mistral-7b", 4096, 14336, 32, 32, 8, 32000, "mistralai/Mistral-7B-v0.1"),
        _a("qwen2.5-7b", 3584, 18944, 28, 28, 4, 152064, "Qwen/Qwen2.5-7B", qkv_bias=True),
        _a("qwen2.5-72b", 8192, 29568, 80, 64, 8, 152064, "Qwen/Qwen2.5-72B", qkv_bias=True),
        _a("phi-3-mini", 3072, 8192, 32, 32, 32, 32064, "microsoft/Phi-3-mini-4k-instruct", fused=True),
    ]
}
ALIASES = {
    "llama-2-7b": "llama-2-7b",
    "llama-7b": "llama-2-7b",
    "meta-llama-3-8b": "llama-3-8b",
    "meta-llama-3-70b": "llama-3-70b",
    "meta-llama-3.1-8b": "llama-3.1-8b",
    "meta-llama-3.1-70b": "llama-3.1-70b",
    "mistral-7b-v0.1": "mistral-7b",
    "phi-3-mini-4k": "phi-3-mini",
    "phi-3-mini-128k": "phi-3-mini",
}
_SUFFIXES = ("-hf", "-instruct", "-chat", "-base")


def normalize(name: str) -> str:
    """`meta-llama/Llama-2-70b-chat-hf` -> `llama-2-70b`: lower case, no org, no chat/instruct/hf suffixes."""
    key = name.strip().lower().rsplit("/", 1)[-1]
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if key.endswith(suffix):
                key, changed = key[: -len(suffix)], True
    return ALIASES.get(key, key)


def known_names() -> list[str]:
    return sorted(KNOWN)


def from_config(cfg: dict, name: str) -> Arch:
    """Build an Arch from a transformers `config.json` dict; raise UserError naming the missing field."""
    model_type = cfg.get("model_type", "llama")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(
            f"{name}: model_type {model_type!r} is not supported by the planner; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    try:
        heads = int(cfg["num_attention_heads"])
        return Arch(
            name=name,
            hidden=int(cfg["hidden_size"]),
            intermediate=int(cfg["intermediate_size"]),
            layers=int(cfg["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            vocab=int(cfg["vocab_size"]),
            tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2" or bool(cfg.get("attention_bias", False)),
            fused=model_type == "phi3",
            head_dim=cfg.get("head_dim"),
            source=name,
        )
    except KeyError as exc:
        raise UserError(f"{name}: config.json has no {exc.args[0]!r}; is this a decoder-only LLM?") from None


def resolve(model: str) -> Arch:
    """A local model folder (reads config.json), a known short name, or a hub id of a known model."""
    path = Path(model).expanduser()
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise UserError(
                f"--model {model}: folder has no config.json; point at a Hugging Face model folder"
            )
        try:
            cfg = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{cfg_file}: not valid JSON ({exc})") from None
        return from_config(cfg, str(path))
    key = normalize(model)
    if key in KNOWN:
        return KNOWN[key]
    raise UserError(
        f"--model {model!r}: not a local model folder and not a known architecture; "
        f"known: {', '.join(known_names())} (hub ids like meta-llama/Llama-2-70b-hf work too)"
    )
