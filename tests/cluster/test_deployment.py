"""`python -m cluster validate` checks the whole deployment; each contradiction a review found is caught, and
every shipped file passes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.deployment import check_gpu_training, check_hf_token, check_serve_deploy, pod_env_names
from cluster.manifests import LAUNCHER, validate_launcher
from core.errors import UserError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "training" / "configs"


@pytest.fixture(scope="module")
def launcher() -> dict:
    return validate_launcher(LAUNCHER)


def test_shipped_deployment_validates() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cluster", "validate", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["node_types"] == ["gpu_serve", "gpu_train", "gpu_train_a100", "head"]
    assert list(out["serve_deploy"]) == ["serving/configs/serve-deploy-gpu.yaml"]
    gpu = {t["config"]: t["gpu_memory_gb"] for t in out["training"] if t["gpu"]}
    assert gpu == {"llama2-70b-qlora.yaml": 80, "llama3-8b-lora.yaml": 24}
    assert out["k8s"]["RayJob"]["config"] == "training/configs/llama3-8b-lora.yaml"


def test_serve_file_with_a_local_working_dir_is_rejected_by_serves_schema() -> None:
    doc = yaml.safe_load((REPO / "serving/configs/serve-deploy-gpu.yaml").read_text())
    doc["applications"][0]["runtime_env"] = {"working_dir": "."}
    with pytest.raises(UserError, match=r"applications\.0\.runtime_env.*remote URIs.*Serve's schema"):
        check_serve_deploy(doc, "serve-deploy-gpu.yaml")


@pytest.mark.parametrize(
    "config, overrides, message",
    [
        ("llama3-8b-lora.yaml", ["preflight.gpu_memory_gb=40"], r"gpu_memory_gb is 40.*gpu_train 24 GB"),
        (
            "llama3-8b-lora.yaml",
            ["run.storage_path=/mnt/shared/runs"],
            r"run.storage_path is '/mnt/shared/runs'",
        ),
        ("llama2-70b-qlora.yaml", ["output.store=null"], r"output.store is None, which only the node"),
        ("tiny-qlora.yaml", ["scaling.use_gpu=true"], r"model.path tiny is built on the driver only"),
    ],
)
def test_gpu_training_config_contradictions(
    launcher: dict, config: str, overrides: list, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        check_gpu_training(CONFIGS / config, launcher, overrides)


def test_cpu_configs_are_for_one_machine(launcher: dict) -> None:
    assert check_gpu_training(CONFIGS / "smollm2-qlora.yaml", launcher) == {
        "config": "smollm2-qlora.yaml",
        "gpu": False,
    }


def test_gated_model_needs_a_token_on_every_pod() -> None:
    with pytest.raises(UserError, match="gated on the Hugging Face Hub"):
        check_hf_token("meta-llama/Meta-Llama-3-8B-Instruct", set(), "job.yaml")
    check_hf_token("HuggingFaceTB/SmolLM2-135M-Instruct", set(), "job.yaml")  # not gated
    job = yaml.safe_load((REPO / "cluster/k8s/rayjob-training.yaml").read_text())
    spec = job["spec"]["rayClusterSpec"]
    assert "HF_TOKEN" in pod_env_names(spec)
    del spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"]  # the workers would lack it
    assert "HF_TOKEN" not in pod_env_names(spec)
