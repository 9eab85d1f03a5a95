"""TrainConfig and the CLI's input checks: every shipped YAML loads, bad configs name every problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.errors import UserError
from training.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "training" / "configs").glob("*.yaml"))


def test_there_are_shipped_configs():
    assert {p.name for p in CONFIGS} >= {
        "tiny-qlora.yaml",
        "tiny-lora.yaml",
        "llama3-8b-lora.yaml",
        "llama2-70b-qlora.yaml",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads_and_names_its_command(path):
    cfg = TrainConfig.from_file(path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and "python -m training --config training/configs/" + path.name in first
    assert cfg.run.name and cfg.output.adapter_name


def base(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load((REPO / "training/configs/tiny-qlora.yaml").read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    out = tmp_path / "c.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


def test_every_problem_is_listed_with_its_path(tmp_path):
    path = base(tmp_path, lora__r=0, optim__lr=-1, scaling__num_workers="two", data__colour="red")
    with pytest.raises(UserError) as err:
        TrainConfig.from_file(path)
    msg = str(err.value)
    for field in ("lora.r", "optim.lr", "scaling.num_workers", "data.colour"):
        assert field in msg, msg
    assert "4 problem(s)" in msg


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        (
            {"deepspeed__zero_stage": 2, "deepspeed__offload": "params"},
            "'params' needs deepspeed.zero_stage 3",
        ),
        (
            {"deepspeed__zero_stage": 0, "deepspeed__offload": "optimizer"},
            "'optimizer' needs deepspeed.zero_stage 2",
        ),
        ({"deepspeed__zero_stage": 1}, "deepspeed.zero_stage"),
        ({"model__method": "full"}, "model.method"),
        ({"data__validation_fraction": 0.9}, "data.validation_fraction"),
    ],
)
def test_cross_field_rules(tmp_path, changes, needle):
    with pytest.raises(UserError, match="problem"):
        try:
            TrainConfig.from_file(base(tmp_path, **changes))
        except UserError as exc:
            assert needle in str(exc), str(exc)
            raise


def test_overrides_are_validated_and_unknown_keys_list_valid_ones(tmp_path):
    cfg = TrainConfig.from_file(base(tmp_path), ["optim.max_steps=7", "lora.target_modules=[q_proj, v_proj]"])
    assert cfg.optim.max_steps == 7 and cfg.lora.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(UserError, match="optim.max_steps"):
        TrainConfig.from_file(base(tmp_path), ["optim.max_stepz=3"])


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env_extra = {"DE_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    import os

    return subprocess.run(
        [sys.executable, "-m", "training", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, **env_extra},
    )  # fmt: skip


def test_validate_cli_json_ok(tiny_model_dir, session_data_dir):
    proc = run_cli("validate", "--config", "training/configs/tiny-qlora.yaml", f"model.path={tiny_model_dir}",
                   "--json", data_dir=session_data_dir)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["valid"] and out["target_modules"] == "all-linear"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model.path=/nonexistent/model"], "model.path: /nonexistent/model does not exist"),
        (
            ["lora.target_modules=[q_proj, qkv_fused]"],
            "lora.target_modules: qkv_fused not in the model's linear layers",
        ),
        (["deepspeed.zero_stage=2", "deepspeed.offload=params"], "needs deepspeed.zero_stage 3"),
        (["no.such.key=1"], "unknown config key 'no.such.key'"),
    ],
)
def test_launch_cli_rejects_bad_input_with_one_line_and_no_traceback(
    tiny_model_dir, session_data_dir, overrides, needle
):
    model = [] if overrides[0].startswith("model.path") else [f"model.path={tiny_model_dir}"]
    proc = run_cli(
        "--config",
        "training/configs/tiny-qlora.yaml",
        *model,
        *overrides,
        "--json",
        data_dir=session_data_dir,
    )
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert "error" in json.loads(proc.stdout.strip().splitlines()[-1])


def test_missing_config_file_is_a_clear_error(session_data_dir):
    proc = run_cli("--config", "nope.yaml", data_dir=session_data_dir)
    assert proc.returncode == 2 and "config file not found: nope.yaml" in proc.stderr


def test_validate_runs_the_memory_preflight_for_gpu_configs(session_data_dir):
    cfg = "training/configs/llama2-70b-qlora.yaml"
    proc = run_cli("validate", "--config", cfg, "--json", data_dir=session_data_dir)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["preflight"]["per_gpu_gb"] > 10


def test_launch_refuses_a_run_that_does_not_fit_unless_forced(session_data_dir):
    cfg = "training/configs/llama2-70b-qlora.yaml"
    proc = run_cli("--config", cfg, "preflight.gpu_memory_gb=12", data_dir=session_data_dir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "GB" in proc.stderr.splitlines()[-1] or "GB" in proc.stderr
    forced = run_cli("validate", "--config", cfg, "preflight.gpu_memory_gb=12", "preflight.force=true", "--json",
                     data_dir=session_data_dir)  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout.strip().splitlines()[-1])["preflight"]["fits"] is False


def test_unloadable_model_is_one_clear_error() -> None:
    """A mistyped hub id (nothing cached, offline) is a UserError naming model.path, not a traceback later."""
    from core.errors import UserError
    from training.launch import load_model_files

    with pytest.raises(UserError, match="model.path: cannot load 'someorg/not-a-model'"):
        load_model_files("someorg/not-a-model")
