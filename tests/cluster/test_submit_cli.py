"""`python -m cluster submit/status` error paths (the happy path runs in test_multinode.py on a real cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cluster.submit import EXCLUDES, project_runtime_env
from core.net import free_port

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cluster", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_submit_unreachable_dashboard_is_one_line() -> None:
    port = free_port()
    out = cli("submit", "--address", f"http://127.0.0.1:{port}", "--json", "--", "python", "-c", "print(1)")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert (
        f"cannot reach the Ray dashboard at http://127.0.0.1:{port}"
        in json.loads(out.stdout.splitlines()[-1])["error"]
    )


def test_submit_needs_an_entrypoint_and_a_dashboard_url() -> None:
    out = cli("submit", "--address", "http://127.0.0.1:1")
    assert out.returncode == 2 and "nothing to run" in out.stderr
    out = cli("submit", "--address", "127.0.0.1:6379", "--", "true")
    assert out.returncode == 2 and "needs the dashboard URL" in out.stderr
    out = cli("status", "--address", f"http://127.0.0.1:{free_port()}", "--json")
    assert out.returncode == 2 and "cannot reach the Ray dashboard" in out.stderr


def test_unknown_subcommand() -> None:
    out = cli("deploy", "--json")
    assert out.returncode == 2 and "(got 'deploy')" in json.loads(out.stdout.splitlines()[-1])["error"]


def test_runtime_env_leaves_local_artefacts_behind(monkeypatch) -> None:
    monkeypatch.setenv("DE_DATA_DIR", "/shared/data")
    env = project_runtime_env(env={"EXTRA": "1"})
    assert env["working_dir"] == str(REPO)
    assert {".venv", "data", "runs", ".git"} <= set(EXCLUDES) and env["excludes"] == EXCLUDES
    assert env["env_vars"]["DE_DATA_DIR"] == "/shared/data" and env["env_vars"]["EXTRA"] == "1"
