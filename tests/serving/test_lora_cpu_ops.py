"""serving/lora_cpu_ops.py: the same arithmetic as vLLM's CPU LoRA ops for adapter tokens, none for base tokens,
and really loaded by vLLM's engine process through the plugin entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from serving import lora_cpu_ops as ours


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    tokens, hidden, rank, width, slots = 37, 64, 8, 96, 4
    return {
        "x": torch.randn(tokens, hidden),
        "a": torch.randn(slots, 1, rank, hidden),
        "b": torch.randn(slots, 1, width, rank),
        "buf": torch.randn(tokens, rank),
        "idx": torch.randint(0, slots, (tokens,)),
    }


def run_ops(impl, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # noqa: ANN001 - a module
    """Every op of `impl` on fresh copies of the same starting tensors."""
    x, a, b, buf, idx = batch["x"], batch["a"], batch["b"], batch["buf"], batch["idx"]
    rank, width = a.shape[2], b.shape[2]
    out = {"shrunk": torch.zeros(len(x), rank), "expanded": torch.ones(len(x), width),
           "sliced": torch.ones(len(x), 3 * width), "prefill": torch.zeros(len(x), rank),
           "prefill_out": torch.zeros(len(x), width)}  # fmt: skip
    impl.bgmv_shrink(x, a, out["shrunk"], idx, 0.5)
    impl.bgmv_expand(buf, b, out["expanded"], idx, add_inputs=True)
    impl.bgmv_expand_slice(buf, b, out["sliced"], idx, width, width, add_inputs=False)
    # prefill form: three sequences of 10, 20 and 7 tokens on adapters 2, 0 and 3
    seqs = (torch.tensor([0, 10, 30]), torch.tensor([10, 20, 7]), torch.tensor([2, 0, 3]), 3, 20, len(x))
    impl.sgmv_shrink(x, a, out["prefill"], *seqs, 1.0)
    impl.sgmv_expand(out["prefill"], b, out["prefill_out"], *seqs, False)
    return out


def test_adapter_tokens_get_what_vllms_ops_give(batch: dict[str, torch.Tensor]) -> None:
    from vllm.lora.ops import torch_ops as vllm_ops

    theirs, mine = run_ops(vllm_ops, batch), run_ops(ours, batch)
    for name, expected in theirs.items():
        assert torch.allclose(mine[name], expected, atol=1e-4), name


def test_base_tokens_get_no_delta(batch: dict[str, torch.Tensor]) -> None:
    x, a, idx = batch["x"], batch["a"], batch["idx"].clone()
    idx[:5] = -1  # vLLM's mark for "no LoRA"
    out = torch.full((len(x), a.shape[2]), 7.0)
    ours.bgmv_shrink(x, a, out, idx, 1.0)
    assert out[:5].abs().max() == 0 and out[5:].abs().max() > 0
    everyone_base = torch.full_like(out, 7.0)
    ours.bgmv_shrink(x, a, everyone_base, torch.full_like(idx, -1), 1.0)
    assert everyone_base.abs().max() == 0


def test_a_bad_choice_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ours.ENV, "fast")
    with pytest.raises(ValueError, match="DE_LORA_CPU_OPS='fast'"):
        ours.enabled()


# The engine core is a process vLLM starts; it loads the plugin from the installed entry point, so what the
# batch answers says which ops ran there. max_loras 1 puts the adapter in the slot vLLM's -1 index wraps to.
ENGINE_SCRIPT = """
import json, sys
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest
    model, adapter = sys.argv[1], sys.argv[2]
    params = SamplingParams(max_tokens=6, temperature=0, logprobs=0)
    base_prompt, lora_prompt = "the pump pressure is", "check the valve"
    llm = LLM(model=model, enable_lora=True, max_loras=1, max_lora_rank=8, kv_cache_memory_bytes=256 * 2**20,
              enforce_eager=True, dtype="float32", max_model_len=128, seed=0)
    lora = LoRARequest("a", 1, adapter)
    def run(prompts, loras):
        return [[o.outputs[0].token_ids, o.outputs[0].cumulative_logprob]
                for o in llm.generate(prompts, params, lora_request=loras, use_tqdm=False)]
    result = {"base_alone": run([base_prompt], None)[0], "lora_alone": run([lora_prompt], lora)[0],
              "mixed": run([base_prompt, lora_prompt], [None, lora])}
    print("RESULT " + json.dumps(result), flush=True)
"""


def run_engine(tiny_model_dir: Path, adapter: Path, tmp_path: Path, ops: str) -> dict:
    script = tmp_path / "engine.py"
    script.write_text(ENGINE_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_model_dir), str(adapter)],
        capture_output=True, text=True, timeout=600, env={**os.environ, ours.ENV: ops},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT ") :])


@pytest.mark.slow
def test_the_engine_runs_them_and_base_requests_stay_base(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A base request batched with an adapter request answers as when alone, and the adapter request as when
    alone, in vLLM's own engine process. With vLLM's ops the base answer changes (vllm#48421: checked once by
    hand, `DE_LORA_CPU_OPS=vllm`; not run here to keep the suite's time), so this fails if the plugin is not
    loaded."""
    from training.tiny import random_adapter

    adapter = random_adapter(tiny_model_dir, tmp_path / "adapter", seed=3, rank=8, targets="all-linear")
    r = run_engine(tiny_model_dir, adapter, tmp_path, "grouped")
    (base_ids, base_lp), (lora_ids, lora_lp) = r["mixed"]
    assert base_ids == r["base_alone"][0] and base_lp == pytest.approx(r["base_alone"][1], abs=1e-3)
    assert lora_ids == r["lora_alone"][0] and lora_lp == pytest.approx(r["lora_alone"][1], abs=1e-3)
