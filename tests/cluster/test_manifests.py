"""The cluster definitions pass Ray's own launcher validation and reference things that exist."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.manifests import K8S_DIR, LAUNCHER, validate_k8s, validate_launcher
from core.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def test_launcher_config_passes_ray_schema() -> None:
    prepared = validate_launcher(LAUNCHER)
    types = prepared["available_node_types"]
    assert set(types) == {"head", "gpu_train", "gpu_train_a100", "gpu_serve"}
    assert types["gpu_train"]["max_workers"] > types["gpu_train"]["min_workers"] == 0
    assert any('pip install -q -e ".[gpu]"' in c for c in prepared["setup_commands"])


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["available_node_types"]["gpu_train"].update(min_wokers=1), "min_wokers"),
        (lambda c: c.update(max_workers="many"), "max_workers"),
        (lambda c: c.update(head_node_type="nope"), "head_node_type"),
    ],
)
def test_launcher_config_errors_are_caught(tmp_path: Path, mutate, expected: str) -> None:
    cfg = copy.deepcopy(yaml.safe_load(LAUNCHER.read_text()))
    mutate(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError, match=expected):
        validate_launcher(bad)


def _k8s_copy(tmp_path: Path, old: str, new: str) -> Path:
    """cluster/k8s copied to tmp_path/k8s with one replacement in the RayJob manifest."""
    broken = tmp_path / "k8s"
    broken.mkdir()
    for f in K8S_DIR.iterdir():
        text = f.read_text()
        (broken / f.name).write_text(text.replace(old, new) if f.name == "rayjob-training.yaml" else text)
    return broken


def test_kuberay_manifests_reference_real_code_and_agree(tmp_path: Path) -> None:
    found = validate_k8s(K8S_DIR, LAUNCHER)
    assert found["RayJob"]["config"] == "training/configs/llama3-8b-lora.yaml"
    assert found["RayService"]["import_path"] == "serving.app:build_app"
    assert found["bucket"] == ["helix-domain-expert"]
    # A manifest pointing at a config that does not exist is caught.
    broken = _k8s_copy(tmp_path, "llama3-8b-lora.yaml", "missing.yaml")
    with pytest.raises(UserError, match="missing.yaml does not exist"):
        validate_k8s(broken, LAUNCHER)


def test_structural_gaps_are_named_not_keyerrors(tmp_path: Path) -> None:
    """A launcher without `docker`, a manifest without its containers: one error naming the missing key."""
    import yaml

    launcher = tmp_path / "ray_cluster.yaml"
    raw = yaml.safe_load(LAUNCHER.read_text())
    raw.pop("docker")
    launcher.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=r"`docker` is missing"):
        validate_k8s(K8S_DIR, launcher)
    broken = _k8s_copy(tmp_path, "containers:", "containerz:")
    with pytest.raises(UserError, match=r"rayjob-training.yaml: `template.spec.containers` is missing"):
        validate_k8s(broken, LAUNCHER)
    out = subprocess.run(
        [sys.executable, "-m", "cluster", "validate", "--launcher", str(launcher)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr + out.stdout
