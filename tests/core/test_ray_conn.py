"""The local-cluster worker setup hook drops exactly Ray Train's state-API noise, nothing else it logs."""

from __future__ import annotations

import logging

from core.ray_conn import STATE_API_NOISE, quiet_state_api_hook

CLEANER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def test_only_the_state_api_warning_is_dropped() -> None:
    quiet_state_api_hook()()
    logger = logging.getLogger(CLEANER)

    def record(msg: str) -> logging.LogRecord:
        return logger.makeRecord(CLEANER, logging.WARNING, __file__, 1, msg, None, None)

    assert not logger.filter(record(f"{STATE_API_NOISE}. State API may be temporarily unavailable."))
    assert logger.filter(record("Controller actor died; removing placement group pg-1"))


RAY_OUTSIDE_THE_REPO = """
import logging, sys
sys.path.insert(0, sys.argv[1])  # the driver finds the project; its workers' sys.path does not have it
from core.ray_conn import connect
import ray
connect(num_cpus=1)

@ray.remote(num_cpus=0)
def filtered() -> bool:
    name = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
    return bool(logging.getLogger(name).filters)

print("hook-in-worker", ray.get(filtered.remote(), timeout=120))
"""


def test_the_hook_runs_in_workers_that_cannot_import_the_project(tmp_path) -> None:
    """Ray ships the setup hook to every worker; one that imported `core` would kill workers started outside
    the repository (a benchmark, a job without working_dir), and Ray would restart them forever."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", RAY_OUTSIDE_THE_REPO, str(repo)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hook-in-worker True" in proc.stdout
