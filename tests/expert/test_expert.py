"""A real model that learns and answers: training lowers held-out loss, QLoRA ZeRO-3 on 2 workers saves an adapter
that PEFT and vLLM load, RAG answers domain questions with the right source, and the four modes order as claimed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.expert.conftest import REPO, chat

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end(expert_run) -> None:
    """`python -m cluster demo`'s success path: every step ran (none reused on a fresh data folder), the four
    modes were asked without errors, and the report and its figures were written."""
    demo = expert_run["demo"]
    steps = [(s["name"], s["reused"]) for s in demo["steps"]]
    assert steps == [
        ("base model", True),  # imported once per session by the smollm2_dir fixture
        ("ingest", False),
        ("start Ray", False),
        ("fine-tune", False),
        ("serve", False),
        ("evaluate", False),
    ], steps
    assert set(demo["modes"]) == {"base", "base+rag", "adapter", "adapter+rag"}
    assert all(m["errors"] == 0 and m["n"] == 2 for m in demo["modes"].values()), demo["modes"]
    for name in ("report.md", "summary.json", "scores.png", "loss_curve.png"):
        assert Path(demo["files"][name]).is_file(), name
    assert "python -m evaluation" in " ".join(demo["serve_again"])


def test_qlora_zero3_two_workers_lowers_held_out_loss(expert_run) -> None:
    r = expert_run["result"]
    assert r["steps"] == 12 and not r["resumed_from"]
    # The untrained base's held-out loss is measured in the same run before step 1.
    assert r["initial_eval_loss"] > 2.5, r
    assert r["eval_loss"] < r["initial_eval_loss"] - 0.1, r
    assert r["base_fingerprint"] and Path(r["adapter_path"], "adapter_model.safetensors").is_file()


def test_saved_adapter_loads_in_peft_and_changes_answers(expert_run, smollm2_dir) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the cut-out wind speed of the HW-7 turbine?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        before = base(ids).logits[0, -1]
        tuned = PeftModel.from_pretrained(base, expert_run["result"]["adapter_path"])
        after = tuned(ids).logits[0, -1]
    assert torch.isfinite(after).all()
    assert (after - before).abs().max() > 0.1  # the LoRA weights are not empty (gathered from ZeRO-3 shards)


QUESTION = "What torque do the M12 busbar bolts in the HW-9 converter cabinet need?"  # qa.jsonl q20: 70 Nm


def test_rag_answers_a_domain_question_with_its_source(expert_app) -> None:
    r = chat(
        expert_app["url"],
        {
            "model": "smollm2",
            "messages": [{"role": "user", "content": QUESTION}],
            "temperature": 0,
            "rag": {"top_k": 4},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "70 Nm" in body["choices"][0]["message"]["content"], body["choices"][0]["message"]
    assert any(s["source"].endswith("converter-cabinet-reference.html") for s in body["sources"]), body[
        "sources"
    ]


def test_base_alone_does_not_know_the_domain(expert_app) -> None:
    r = chat(
        expert_app["url"],
        {
            "model": "smollm2",
            "messages": [{"role": "user", "content": QUESTION}],
            "temperature": 0,
            "rag": False,
        },
    )
    assert r.status_code == 200 and "70 Nm" not in r.json()["choices"][0]["message"]["content"]


def test_four_modes_order_on_the_example_questions(expert_app, tmp_path) -> None:
    """Every fourth example question in all four modes through `python -m evaluation` (the CLI users run)."""
    import subprocess
    import sys

    from evaluation.runner import load_questions

    questions = load_questions(REPO / "examples" / "qa.jsonl")[::4]
    qfile = tmp_path / "qa.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in questions))
    cmd = [
        sys.executable, "-m", "evaluation", "--config", str(REPO / "evaluation/configs/local.yaml"),
        "--questions", str(qfile), "--out", str(tmp_path / "eval"), f"base_url={expert_app['url']}/v1",
        "base_model=smollm2", f"adapter={expert_app['adapter']}", "api_key=expert-key", "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modes = json.loads(proc.stdout.strip().splitlines()[-1])["modes"]
    assert all(m["errors"] == 0 for m in modes.values()), modes
    # The claim the product makes: the base alone does not know the domain; retrieval and fine-tuning each add
    # to it. (Thresholds are far below the measured numbers in README: this checks the ordering, not a goal.)
    assert modes["base"]["contains"] <= 0.15, modes
    assert modes["base+rag"]["contains"] >= modes["base"]["contains"] + 0.15, modes
    assert modes["adapter+rag"]["contains"] >= modes["base"]["contains"] + 0.15, modes
    assert modes["base+rag"]["hit_rate"] >= 0.8, modes
    assert (tmp_path / "eval" / "scores.png").is_file()


def test_adapter_of_another_base_is_refused_under_the_real_base(expert_app, tiny_model_dir, tmp_path) -> None:
    import httpx

    from core.adapter_store import AdapterStore
    from core.fingerprint import model_fingerprint
    from training.tiny import random_adapter

    store = AdapterStore(expert_app["store"])
    src = random_adapter(tiny_model_dir, tmp_path / "tiny-adapter", seed=3)
    store.publish(
        src, "tiny-made", {"base_model": "tiny-llama"}, base_fingerprint=model_fingerprint(tiny_model_dir)
    )
    headers = {"Authorization": "Bearer expert-key"}
    models = httpx.get(f"{expert_app['url']}/v1/models", headers=headers, timeout=60).json()
    assert "tiny-made" not in {m["id"] for m in models["data"]}
    r = chat(expert_app["url"], {"model": "tiny-made", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (
        err["code"] == "adapter_base_mismatch"
        and "tiny-llama" in err["message"]
        and "smollm2" in err["message"]
    )


def test_a_new_domain_works_without_retraining(expert_app) -> None:
    """Documents posted to /v1/documents into a new collection answer questions that name it in rag.collection."""
    import httpx

    doc = {
        "source": "kb/orion-chiller.md",
        "title": "Orion chiller",
        "text": "# Orion CH-40 chiller\n\nThe Orion CH-40 chiller must be descaled every 1,800 operating hours. "
        "Its refrigerant charge is 12.5 kg of R-513A. The condenser fans are replaced with kit OR-77.",
    }
    headers = {"Authorization": "Bearer expert-key"}
    r = httpx.post(
        f"{expert_app['url']}/v1/documents",
        json={"collection": "new_domain", "documents": [doc]},
        headers=headers,
        timeout=300,
    )
    assert r.status_code == 200, r.text
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "How often must the Orion CH-40 chiller be descaled?"}],
        "temperature": 0,
        "rag": {"collection": "new_domain", "top_k": 2},
    }
    answer = chat(expert_app["url"], body).json()
    assert "1,800" in answer["choices"][0]["message"]["content"], answer
    assert answer["sources"][0]["source"] == "kb/orion-chiller.md"
