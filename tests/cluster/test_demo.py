"""The demo: refusals with one clear line (port taken, data folder unusable) and its adapter-reuse rule."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cluster", "demo", *args, "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = demo({"DE_DEMO_PORT": str(port), "DE_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr and "Traceback" not in out.stderr
    assert "DE_DEMO_PORT" in json.loads(out.stdout.strip().splitlines()[-1])["error"]
    assert not (tmp_path / "data" / "runs").exists(), "nothing may be started or written before the refusal"


def test_refuses_an_unusable_data_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = demo({"DE_DATA_DIR": str(blocker / "data")}, "--port", str(port))
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"data folder {blocker / 'data'} cannot be created" in out.stderr and "Traceback" not in out.stderr


def test_refuses_a_bad_port_value() -> None:
    out = demo({"DE_DEMO_PORT": "eighty"})
    assert out.returncode == 2 and "port 'eighty' is not a TCP port number" in out.stderr


def test_adapter_reuse_fingerprint() -> None:
    """Reuse only when config (storage aside), data and base model are the same."""
    from cluster.demo import TRAIN_CONFIG, train_fingerprint
    from training.config import TrainConfig

    a = TrainConfig.from_file(TRAIN_CONFIG, ["run.storage_path=/tmp/one"])
    b = TrainConfig.from_file(TRAIN_CONFIG, ["run.storage_path=/tmp/two"])
    c = TrainConfig.from_file(TRAIN_CONFIG, ["optim.lr=0.0005"])  # the shipped config trains at 1e-3
    assert train_fingerprint(a, "m1") == train_fingerprint(b, "m1")
    assert train_fingerprint(a, "m1") != train_fingerprint(a, "m2")
    assert train_fingerprint(a, "m1") != train_fingerprint(c, "m1")
