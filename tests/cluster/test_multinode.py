"""Multi-node behaviour for real on one machine: a 2-node Ray cluster on 127.0.0.1 in its own process.

One scenario (tests/cluster/multinode_scenario.py) so the cluster starts once: the cluster CLI's submit and
preflight across both nodes, the training job through the plain `ray job submit` line with STRICT_SPREAD and a
shared checkpoint folder, and a Serve deployment with replicas on both nodes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.adapter_store import AdapterStore

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.multinode, pytest.mark.slow]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict:
    shared = tmp_path_factory.mktemp("shared")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "DE_DATA_DIR")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "cluster" / "multinode_scenario.py"), "--shared", str(shared), "--steps", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["shared"] = str(shared)
    return out


def test_cluster_has_two_nodes(scenario: dict) -> None:
    assert len(set(scenario["nodes"])) == 2


def test_cluster_submit_runs_preflight_across_nodes(scenario: dict) -> None:
    ok, gpu = scenario["preflight_ok"], scenario["preflight_gpu"]
    assert ok["ok"] and ok["nodes"] == 2, ok
    assert [s["nodes_checked"] for s in ok["storage"]] == [2, 2]
    assert gpu["returncode"] == 1 and gpu["result"]["status"] == "FAILED"
    assert "training needs 2 GPU" in gpu["stderr"], "the job's log must carry the preflight's shortfall"


def test_training_job_spreads_workers_and_checkpoints_to_shared_storage(scenario: dict) -> None:
    t = scenario["training"]
    assert t["returncode"] == 0, t["tail"]
    assert t["result"]["adapter_name"] == "multinode" and t["result"]["steps"] == 2
    # Two steps on two different batches: their losses are not comparable, so this checks they are real numbers
    # of a language model's range (finite, positive, below ln(vocab) + margin). That loss falls is
    # test_train_e2e's job, on enough steps to show it.
    for key in ("initial_loss", "final_loss"):
        assert math.isfinite(t["result"][key]) and 0 < t["result"][key] < 20, t["result"]
    assert len(t["worker_nodes"]) == 2, (
        f"STRICT_SPREAD must put the 2 workers on 2 nodes: {t['worker_nodes']}"
    )
    assert set(t["worker_nodes"]) <= set(scenario["nodes"])
    assert t["checkpoints"], "checkpoints must land in the shared folder"
    assert all(c.startswith("runs/multinode/") for c in t["checkpoints"])
    shared = Path(scenario["shared"])
    store = AdapterStore(shared / "adapters")  # published once, complete, in the shared folder
    assert store.versions("multinode") == [1]
    assert (store.local_path("multinode") / "adapter_model.safetensors").is_file()


def test_cluster_status_lists_nodes_and_jobs(scenario: dict) -> None:
    st = scenario["status"]
    assert sorted(n["node_id"] for n in st["nodes"] if n["state"] == "ALIVE") == sorted(scenario["nodes"]), st
    assert st["resources"]["CPU"] == 4.0
    entry = {j["status"] for j in st["jobs"] if "python -m training" in j["entrypoint"]}
    assert entry == {"SUCCEEDED"}


def test_serve_replicas_on_different_nodes(scenario: dict) -> None:
    s = scenario["serving"]
    assert len(set(s["replica_nodes"])) == 2 and set(s["replica_nodes"]) == set(scenario["nodes"])
    assert set(s["answer_nodes"]) == set(s["replica_nodes"]), "both replicas must answer"
    assert s["dims"] == [384]
