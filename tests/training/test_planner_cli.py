"""`python -m training plan` as users run it: --json last line, readable table, exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

BASE = ["--model", "meta-llama/Llama-2-70b-hf", "--method", "qlora", "--gpus", "2", "--gpu-memory-gb", "40"]
CALIB = [
    "--zero",
    "3",
    "--seq-len",
    "2048",
    "--micro-batch",
    "2",
    "--lora-r",
    "8",
    "--gradient-checkpointing",
]


def plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training", "plan", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_json_last_line_has_every_key() -> None:
    out = plan(*BASE, *CALIB, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("per_gpu_gb", "fits", "breakdown", "cpu_ram_gb", "cpu_breakdown", "recommendation", "phases"):
        assert key in result
    assert result["fits"] is True and result["model"] == "llama-2-70b"
    assert abs(result["per_gpu_gb"] - 36.6) / 36.6 <= 0.15
    for part in ("weights_frozen", "lora_weights", "gradients", "optimizer_states", "activations", "logits"):
        assert part in result["breakdown"]
    assert {"with_checkpointing", "without_checkpointing"} <= set(result["activations"])


def test_human_table_and_not_fitting_full_finetune() -> None:
    out = plan("--model", "llama-2-70b", "--method", "full", "--gpus", "2", "--gpu-memory-gb", "80")
    assert out.returncode == 0, out.stderr
    assert "fits: NO" in out.stdout and "optimizer states" in out.stdout and "recommended" in out.stdout


def test_local_model_folder(tiny_model_dir) -> None:
    out = plan(
        "--model", str(tiny_model_dir), "--method", "lora", "--gpus", "1", "--gpu-memory-gb", "8", "--json"
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    built = json.loads((tiny_model_dir / "tiny.json").read_text())
    assert result["params"]["total"] == built["parameters"]  # counted from config.json == counted by torch


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "nope-13b", "--gpus", "1", "--gpu-memory-gb", "80"], "known: "),
        (
            ["--model", "llama-2-7b", "--gpus", "0", "--gpu-memory-gb", "80"],
            "gpus must be a positive integer",
        ),
        (["--model", "llama-2-7b", "--gpus", "1", "--gpu-memory-gb", "-5"], "gpu_memory_gb must be positive"),
        (
            [
                "--model",
                "llama-2-7b",
                "--gpus",
                "2",
                "--gpu-memory-gb",
                "80",
                "--zero",
                "2",
                "--offload",
                "params",
            ],
            "ZeRO-3",
        ),
        (["--model", "llama-2-7b", "--gpus", "1", "--gpu-memory-gb", "80", "--zero", "1"], "invalid choice"),
        (
            [
                "--model",
                "llama-2-7b",
                "--method",
                "full",
                "--load-in-4bit",
                "--gpus",
                "1",
                "--gpu-memory-gb",
                "80",
            ],
            "4-bit",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], words: str, capsys: pytest.CaptureFixture) -> None:
    from training.__main__ import main  # in-process: same dispatcher and run_cli as the command line

    try:
        code = main(["plan", *args, "--json"])
    except SystemExit as exc:  # argparse rejects bad choices itself (usage line, exit 2)
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and words in err and "Traceback" not in err
    if out.strip():
        assert "error" in json.loads(out.strip().splitlines()[-1])


def test_bad_input_exit_code_through_a_real_process() -> None:
    out = plan("--model", "nope-13b", "--gpus", "1", "--gpu-memory-gb", "80")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "known: " in out.stderr
