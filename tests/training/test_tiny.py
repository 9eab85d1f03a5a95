"""The project's tiny model: deterministic, and a real Llama that transformers and PEFT load."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from training.tiny import build


def digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.suffix in {".safetensors", ".json"} and p.name != "tiny.json"
    }


def test_build_is_deterministic_and_reused(tmp_path: Path, tiny_model_dir: Path) -> None:
    other = build(tmp_path / "again")
    assert not other["reused"]
    assert digest(tmp_path / "again") == digest(tiny_model_dir)
    assert build(tmp_path / "again")["reused"]


def test_loads_in_transformers_with_chat_template(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama"
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is the HW-7 torque?"}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<s><|user|>\n") and text.endswith("<|assistant|>\n")
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
    assert tok.decode(ids[0]) == text  # byte-level BPE round-trips
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape[-1] == model.config.vocab_size >= len(tok)


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], "all-linear"])
def test_peft_lora_applies(tiny_model_dir: Path, targets: list[str] | str) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM")
    )
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert 0 < trainable < total
