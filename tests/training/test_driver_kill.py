"""The driver itself (`python -m training`, which owns its local Ray cluster here) is SIGKILLed mid-run together
with everything it started, and the same command is run again: it resumes from the last registered checkpoint,
and no step is lost or repeated in the adapter's history."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, write_chat_dataset


@pytest.mark.slow
def test_killed_driver_resubmitted_resumes_without_losing_or_repeating_steps(
    session_data_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = write_chat_dataset(tmp_path / "chat.jsonl")
    cmd = [
        sys.executable, "-m", "training", "--config", str(REPO / "training/configs/tiny-lora.yaml"),
        f"model.path={tiny_model_dir}", f"data.path={data}", "data.max_seq_len=64", "optim.max_steps=12",
        "run.checkpoint_every=3", "run.eval_every=12", "run.name=driver-kill", f"output.store={tmp_path / 'store'}",
        "output.adapter_name=driver-kill", "--output-dir", str(tmp_path / "runs"), "--json",
    ]  # fmt: skip
    env = {**os.environ, "DE_DATA_DIR": str(session_data_dir)}
    snapshot = tmp_path / "runs" / "driver-kill" / "checkpoint_manager_snapshot.json"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    registered, deadline = 0, time.monotonic() + 600
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                registered = json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"]["step"]
            except (OSError, ValueError, KeyError, TypeError):
                registered = 0
            if registered >= 3:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local cluster it started: our process group
        proc.wait(timeout=60)
        log.close()
    assert 3 <= registered < 12, (tmp_path / "first.log").read_text()[-3000:]

    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    r = json.loads(again.stdout.strip().splitlines()[-1])
    assert r["resumed_from"] and r["resumed_from"][0] >= registered and r["steps"] == 12
    history = [json.loads(x) for x in (Path(r["adapter_path"]) / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == list(range(1, 13))  # none lost, none repeated
