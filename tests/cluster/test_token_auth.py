"""Ray 2.60 token authentication on a real head started with `ray start --head` on loopback.

A head turns token auth on by default when a token exists in ~/.ray/auth_token, and every local `ray.init()`
(our demo and tests included) writes one there. Ray's own job CLI then sends the token only with
RAY_AUTH_MODE=token. This test runs a head in a throwaway HOME holding a token and checks: the plain CLI fails
as described, the README's line (RAY_AUTH_MODE=token) submits a real training job, `python -m cluster submit`,
`status` and `preflight` find the token themselves, and a wrong token gets one actionable line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from core.net import free_port

REPO = Path(__file__).resolve().parents[2]
RAY_CLI = str(Path(sys.executable).parent / "ray")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env.update(
        HOME=str(home),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # bind the node to 127.0.0.1 only
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` = this venv
    )
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    (home / ".ray").mkdir()
    token = uuid.uuid4().hex
    (home / ".ray" / "auth_token").write_text(token)  # what a local ray.init() leaves behind
    gcs, dash = free_port(), free_port()
    agent, agent_grpc, rt_env, metrics, client = (free_port() for _ in range(5))
    cmd = [
        RAY_CLI, "start", "--head", "--block", "--port", str(gcs), "--node-ip-address", "127.0.0.1",
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
        "--num-cpus", "4", "--disable-usage-stats", "--temp-dir", str(tmp_path_factory.mktemp("ray")),
        "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(rt_env), "--metrics-export-port", str(metrics),
        "--ray-client-server-port", str(client),
    ]  # fmt: skip
    log = (home / "ray-start.log").open("w")
    proc = subprocess.Popen(cmd, env=_env(home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 180
        while True:  # the job agent registers a little after the dashboard answers
            try:
                r = httpx.get(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"}, timeout=5)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (home / "ray-start.log").read_text()[
                -3000:
            ]
            time.sleep(1)
        yield {"home": home, "url": url, "gcs": f"127.0.0.1:{gcs}", "token": token}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the session we started: ray start and everything it launched
        try:
            proc.wait(timeout=45)  # Ray drains for up to 30 s on SIGTERM
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


def run(cmd: list[str], home: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=REPO, env=_env(home, **env), capture_output=True, text=True, timeout=timeout
    )


def test_plain_job_cli_fails_without_the_mode(head) -> None:
    out = run(
        [RAY_CLI, "job", "submit", "--address", head["url"], "--", "python", "-c", "print(1)"], head["home"]
    )
    assert out.returncode != 0 and "Authentication required" in out.stdout + out.stderr


def test_readme_line_submits_training_with_the_token(head) -> None:
    out = run(
        [
            RAY_CLI,
            "job",
            "submit",
            "--address",
            head["url"],
            "--working-dir",
            ".",
            "--",
            "python",
            "-m",
            "training",
            "--config",
            "training/configs/tiny-lora.yaml",
            "optim.max_steps=2",
            "scaling.num_workers=1",
            "run.eval_every=2",
            "run.checkpoint_every=2",
            "--json",
        ],  # fmt: skip
        head["home"],
        timeout=540,
        RAY_AUTH_MODE="token",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    result = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"adapter_name"')]
    assert result and result[-1]["steps"] == 2


def test_project_clis_find_the_token_themselves(head) -> None:
    out = run(
        [sys.executable, "-m", "cluster", "submit", "--address", head["url"], "--json", "--",
         "python", "-c", "print('token-ok')"],
        head["home"],
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert (
        json.loads(out.stdout.splitlines()[-1])["status"] == "SUCCEEDED"
        and "token-ok" in out.stdout + out.stderr
    )
    out = run([sys.executable, "-m", "cluster", "status", "--address", head["url"], "--json"], head["home"])
    assert out.returncode == 0, out.stderr[-2000:]
    nodes = json.loads(out.stdout.splitlines()[-1])["nodes"]
    assert [n["ip"] for n in nodes] == ["127.0.0.1"]
    out = run(
        [sys.executable, "-m", "cluster", "preflight", "--config", "training/configs/tiny-lora.yaml",
         "--address", head["gcs"], "--json"],
        head["home"],
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_wrong_token_is_one_actionable_line(head) -> None:
    out = run(
        [sys.executable, "-m", "cluster", "status", "--address", head["url"], "--json"],
        head["home"],
        RAY_AUTH_TOKEN="not-this-clusters-token",
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "rejected the token from $RAY_AUTH_TOKEN" in json.loads(out.stdout.splitlines()[-1])["error"]
