"""Preflight against a real local Ray cluster: shortfalls are named before anything is scheduled."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.preflight import run_preflight
from core.errors import UserError
from training.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "training" / "configs" / "tiny-qlora.yaml"


def cfg(*overrides: str) -> TrainConfig:
    return TrainConfig.from_file(CONFIG, list(overrides))


def test_preflight_passes_on_cpu_config(ray_local, tmp_path: Path) -> None:
    result = run_preflight(
        cfg(f"run.storage_path={tmp_path / 'runs'}", f"output.store={tmp_path / 'adapters'}")
    )
    assert result["ok"] and result["nodes"] == 1
    assert [s["uri"] for s in result["storage"]] == [str(tmp_path / "runs"), str(tmp_path / "adapters")]
    assert not list((tmp_path / "runs").iterdir()), "probe files must be cleaned up"


def test_preflight_names_gpu_shortfall(ray_local, tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"training needs 2 GPU \(2 workers, scaling.use_gpu=true\) but the cluster has 0 GPU"
    ):
        run_preflight(cfg("scaling.use_gpu=true", f"run.storage_path={tmp_path}", f"output.store={tmp_path}"))


def test_preflight_names_strict_spread_shortfall(ray_local, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"STRICT_SPREAD needs 2 nodes .* only 1 of 1"):
        run_preflight(
            cfg(
                "scaling.placement_strategy=STRICT_SPREAD",
                f"run.storage_path={tmp_path}",
                f"output.store={tmp_path}",
            )
        )


def test_preflight_names_unusable_storage(ray_local, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    bad = blocker / "runs"
    with pytest.raises(
        UserError,
        match=rf"storage {bad} is not usable from every node: node \w+ \(.*\): {bad} does not exist",
    ):
        run_preflight(cfg(f"run.storage_path={bad}", f"output.store={tmp_path / 'ok'}"))


def test_preflight_cli_json_error_line(tmp_path: Path) -> None:
    """The CLI on its own local Ray: one-line error, JSON error object last on stdout, exit code 2."""
    env_cmd = [
        sys.executable,
        "-m",
        "cluster",
        "preflight",
        "--config",
        str(CONFIG),
        "scaling.use_gpu=true",
        f"run.storage_path={tmp_path}",
        "--json",
    ]
    out = subprocess.run(
        env_cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**__import__("os").environ, "DE_DATA_DIR": str(tmp_path)},
    )
    assert out.returncode == 2, out.stderr[-2000:]
    err = json.loads(out.stdout.strip().splitlines()[-1])["error"]
    assert "training needs 2 GPU" in err and "Traceback" not in out.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "cluster", "preflight", "--config", "nope.yaml", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "config file not found: nope.yaml" in bad.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = subprocess.run([sys.executable, "-m", "cluster", "preflight", "--config", str(CONFIG), "--address",
                           f"127.0.0.1:{port}"], cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert down.returncode == 2 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in down.stderr
