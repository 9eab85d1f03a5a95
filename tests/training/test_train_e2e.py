"""End to end on the real stack: 2 Ray Train workers, DeepSpeed ZeRO-3, bitsandbytes NF4, PEFT; one worker
SIGKILLed mid-run (shared `trained_run` fixture in tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.adapter_store import AdapterStore

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_cli_json_result_has_the_contract_keys(trained_run):
    r = trained_run["result"]
    for key in ("adapter_path", "initial_loss", "final_loss", "steps", "tokens_per_s"):
        assert r[key] is not None, key
    assert r["steps"] == 40
    assert r["tokens_per_s"] > 0
    assert r["data"]["bad_rows"] == 2 and r["data"]["rows"] == 50
    assert "do not match format 'messages'" in trained_run["stderr"]


def test_loss_falls(trained_run):
    r = trained_run["result"]
    assert r["final_loss"] < r["initial_loss"] - 0.3, r
    assert r["eval_loss"] < r["initial_loss"]


def test_killed_worker_resumes_from_checkpoint_with_continuous_history(trained_run):
    assert trained_run["killed"] is not None, "the worker status file never reached step 6"
    killed_at = trained_run["killed"]["step"]
    resumed = trained_run["result"]["resumed_from"]  # recorded in the history by the restarted worker group
    registered = trained_run["killed"]["registered_step"]
    assert len(resumed) == 1 and registered <= resumed[0] <= killed_at, (
        resumed,
        trained_run["killed"],
    )  # not 0
    history = [
        json.loads(x)
        for x in (Path(trained_run["result"]["adapter_path"]) / "metrics.jsonl").read_text().splitlines()
    ]
    assert [h["step"] for h in history] == list(range(1, 41))  # no step lost or repeated
    run_hist = (Path(trained_run["result"]["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    assert len(run_hist) == 40


def test_adapter_store_keeps_other_adapters_and_publishes_complete(trained_run):
    store = AdapterStore(trained_run["store"])
    names = {a.name for a in store.list()}
    assert {"sentinel", "tiny-e2e"} <= names
    meta = store.get("tiny-e2e").metadata
    assert meta["base_model"] == str(trained_run["model_dir"])
    assert meta["method"] == "qlora" and meta["rank"] == 8 and meta["dataset_fingerprint"]
    assert meta["metrics"]["steps"] == 40


def test_adapter_is_standard_peft_with_trained_tensors(trained_run):
    from safetensors.torch import load_file

    path = Path(trained_run["result"]["adapter_path"])
    assert (path / "adapter_model.safetensors").is_file() and not list(path.glob("*.bin"))
    assert (path / "loss_curve.png").stat().st_size > 1000
    assert (Path(trained_run["result"]["run_dir"]) / "loss_curve.png").is_file()
    cfg = json.loads((path / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(trained_run["model_dir"])
    tensors = load_file(str(path / "adapter_model.safetensors"))
    lora_b = [v for k, v in tensors.items() if "lora_B" in k]
    assert lora_b and all(v.numel() > 0 for v in tensors.values())
    assert all(v.float().abs().sum() > 0 for v in lora_b)  # B starts at zero: non-zero means trained


def test_adapter_loads_in_plain_peft_and_changes_outputs(trained_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(trained_run["model_dir"])
    ids = torch.tensor([[1, 20, 30, 40]])
    with torch.no_grad():
        before = base(ids).logits
        model = PeftModel.from_pretrained(base, trained_run["result"]["adapter_path"])
        after = model(ids).logits
    assert not torch.allclose(before, after)


def test_merge_cli_matches_peft(trained_run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    proc = subprocess.run(
        [sys.executable, "-m", "training", "merge", "--adapter", "tiny-e2e", "--store", str(trained_run["store"]),
         "--out", str(out), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["out"] == str(out)
    ids = torch.tensor([[1, 20, 30, 40]])
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(trained_run["model_dir"])
    peft = PeftModel.from_pretrained(base, trained_run["result"]["adapter_path"])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft(ids).logits, atol=2e-2)
    assert list(out.glob("*.safetensors")) and (out / "tokenizer.json").is_file()


VLLM_SCRIPT = """
import json, sys
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest
    model, adapter = sys.argv[1], sys.argv[2]
    llm = LLM(model=model, enable_lora=True, max_lora_rank=8, kv_cache_memory_bytes=256 * 2**20, enforce_eager=True,
              dtype="bfloat16", max_model_len=256)
    out = llm.generate(["<|user|>\\nHow do I check the pump?<|end|>\\n<|assistant|>\\n"],
                       SamplingParams(max_tokens=8, temperature=0), lora_request=LoRARequest("a", 1, adapter))
    print(json.dumps({"tokens": len(out[0].outputs[0].token_ids)}), flush=True)
"""


def test_adapter_loads_in_vllm(trained_run, tmp_path):
    script = tmp_path / "vllm_lora.py"
    script.write_text(VLLM_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(trained_run["model_dir"]), trained_run["result"]["adapter_path"]],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith('{"tokens"'))  # vLLM logs after it
    assert json.loads(line)["tokens"] > 0


def test_rerunning_the_same_run_name_resumes_from_its_last_checkpoint(trained_run):
    """Last in this file: the same command with more steps continues the finished run instead of restarting."""
    cmd = [c for c in trained_run["cmd"] if not c.startswith(("optim.max_steps=", "output.adapter_name="))]
    cmd += ["optim.max_steps=42", "output.adapter_name=tiny-e2e-more"]
    proc = subprocess.run(cmd, cwd=REPO, env=trained_run["env"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["resumed_from"][-1] == 40 and r["steps"] == 42
    history = [json.loads(x) for x in (Path(r["adapter_path"]) / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == list(range(1, 43))
    assert AdapterStore(trained_run["store"]).exists("tiny-e2e")  # the first adapter is untouched
