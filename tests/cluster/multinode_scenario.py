"""A multi-node Ray cluster on 127.0.0.1, run as its own process so pytest never holds two Ray connections.

Builds a `ray.cluster_utils.Cluster` (head with the dashboard + one worker node, 2 CPUs each; all temp files
under a private RAY_TMPDIR so no other Ray on the machine can discover it), then runs, for real:
  1. `ray job submit --working-dir REPO -- python -m training --config ...` with STRICT_SPREAD placement and
     checkpoints/adapters in a shared folder; records where the Ray Train workers ran;
  2. `python -m cluster submit` of `python -m cluster preflight` for a GPU config (fails, exit 1), and the
     same preflight for the CPU config from this process (passes: 2 nodes, shared folder seen by both);
  3. a Serve deployment of the project's embedder with 2 replicas forced onto different nodes.
Prints one JSON line with the findings and shuts down its own cluster (never `ray stop`).

    python tests/cluster/multinode_scenario.py --shared DIR [--steps N] [--only preflight,training,serving]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.net import free_port

REPO = Path(__file__).resolve().parents[2]
RAY_CLI = str(Path(sys.executable).with_name("ray"))
TRAIN_CONFIG = "training/configs/tiny-qlora.yaml"


def node_ports() -> dict:
    """Explicit free ports: the defaults (e.g. the agent's 52365) may belong to another Ray on this machine."""
    return {
        "dashboard_agent_listen_port": free_port(),
        "metrics_export_port": free_port(),
        "runtime_env_agent_port": free_port(),
        "object_store_memory": 200 * 1024**2,
    }


def last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def run_training_job(dash: str, shared: Path, steps: int, extra: list[str]) -> dict:
    """The README's plain `ray job submit` line, with STRICT_SPREAD and shared storage as overrides."""
    from ray.util.state import list_actors

    cmd = [
        RAY_CLI, "job", "submit", "--address", dash, "--working-dir", ".", "--",
        "python", "-m", "training", "--config", TRAIN_CONFIG,
        "scaling.placement_strategy=STRICT_SPREAD", f"run.storage_path={shared / 'runs'}",
        f"output.store={shared / 'adapters'}", f"optim.max_steps={steps}", f"run.checkpoint_every={max(1, steps // 2)}",
        "run.name=multinode", "output.adapter_name=multinode", *extra, "--json",
    ]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=540)
    workers = list_actors(
        address=dash, filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=100
    )
    checkpoints = sorted(
        str(p.relative_to(shared)) for p in (shared / "runs").rglob("checkpoint_*") if p.is_dir()
    )
    return {
        "returncode": proc.returncode,
        "seconds": round(time.monotonic() - t0, 1),
        "result": last_json(proc.stdout),
        "tail": proc.stdout[-4000:] + proc.stderr[-1000:],
        "worker_nodes": sorted({a.node_id for a in workers}),
        "checkpoints": checkpoints,
    }


def run_cluster_submit(dash: str, shared: Path, *overrides: str) -> dict:
    """`python -m cluster submit -- python -m cluster preflight ...`: the wrapper and the preflight as a job."""
    cmd = [
        sys.executable, "-m", "cluster", "submit", "--address", dash, "--json", "--",
        "python", "-m", "cluster", "preflight", "--config", TRAIN_CONFIG, "scaling.placement_strategy=STRICT_SPREAD",
        f"run.storage_path={shared / 'runs'}", f"output.store={shared / 'adapters'}", *overrides,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    return {"returncode": proc.returncode, "result": last_json(proc.stdout), "stderr": proc.stderr[-3000:]}


def run_preflight_here(address: str, shared: Path) -> dict:
    """The same preflight from this process: STRICT_SPREAD fits 2 nodes and both see the shared folder."""
    import ray

    from cluster.preflight import run_preflight
    from core.errors import UserError
    from training.config import TrainConfig

    cfg = TrainConfig.from_file(
        REPO / TRAIN_CONFIG,
        [
            "scaling.placement_strategy=STRICT_SPREAD",
            f"run.storage_path={shared / 'runs'}",
            f"output.store={shared / 'adapters'}",
        ],
    )
    try:
        return run_preflight(cfg, address)
    except UserError as exc:
        return {"ok": False, "error": str(exc)}
    finally:
        ray.shutdown()


def run_serving(address: str) -> dict:
    """Two replicas of the embedder on two nodes (Serve's max_replicas_per_node=1 spreads them)."""
    import ray
    from ray import serve

    ray.init(address=address, runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})

    @serve.deployment(num_replicas=2, max_replicas_per_node=1, ray_actor_options={"num_cpus": 0.5})
    class EmbedderReplica:
        def __init__(self) -> None:
            from retrieval.embedder import SentenceTransformerEmbedder

            self.embedder = SentenceTransformerEmbedder()
            self.node = ray.get_runtime_context().get_node_id()

        def __call__(self, text: str) -> dict:
            return {"node": self.node, "dim": int(self.embedder.embed([text]).shape[1])}

    from ray.util.state import list_actors

    t0 = time.monotonic()
    try:
        handle = serve.run(EmbedderReplica.bind(), name="embed", route_prefix=None)
        answers = [handle.remote(f"gearbox oil change {i}").result(timeout_s=120) for i in range(16)]
        replicas = [
            r.node_id for r in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
            if "EmbedderReplica" in (r.class_name or "")
        ]  # fmt: skip
    finally:
        serve.shutdown()
        ray.shutdown()
    return {
        "seconds": round(time.monotonic() - t0, 1),
        "replica_nodes": sorted(replicas),
        "answer_nodes": sorted({a["node"] for a in answers}),
        "dims": sorted({a["dim"] for a in answers}),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--shared", type=Path, required=True, help="the 'shared storage' folder every node sees"
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--train-override", action="append", default=[], help="extra training key=value")
    parser.add_argument("--only", default="preflight,training,serving", help="stages to run, comma-separated")
    args = parser.parse_args()
    shared = args.shared.resolve()
    (shared / "data").mkdir(parents=True, exist_ok=True)
    os.environ["DE_DATA_DIR"] = str(shared / "data")  # inherited by the nodes, so by every job and worker
    ray_tmp = tempfile.mkdtemp(
        prefix="mn-", dir="/tmp"
    )  # short (socket paths) and private: nothing else finds us
    os.environ["RAY_TMPDIR"] = ray_tmp
    os.environ.pop("RAY_ADDRESS", None)
    # Ray would resolve "127.0.0.1:port" to the machine's routable IP when connecting (job drivers, ray.init);
    # the nodes and everything they start inherit the loopback-only settings from here.
    from core.ray_conn import use_loopback_only

    use_loopback_only()
    # Job entrypoints say `python`: the nodes must find this venv's, as after `source .venv/bin/activate`.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

    from ray.cluster_utils import Cluster

    dash_port = free_port()
    t0 = time.monotonic()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dash_port,
            **node_ports(),
        },
    )
    out: dict = {}
    try:
        # Its own temp dir: real nodes do not share local disks, and two runtime-env agents unpacking the job's
        # working_dir into one shared session folder race (files vanish under the running driver).
        # Ray waits a fixed 30 s for a raylet to register; on 2 busy cores that can pass, so try twice.
        for attempt in (1, 2):
            try:
                cluster.add_node(
                    num_cpus=2,
                    node_ip_address="127.0.0.1",
                    temp_dir=os.path.join(ray_tmp, f"n{attempt}"),
                    **node_ports(),
                )
                break
            except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception on a slow start
                if attempt == 2:
                    raise
                print(f"worker node start failed ({exc}); retrying", file=sys.stderr)
        cluster.wait_for_nodes()
        dash = f"http://127.0.0.1:{dash_port}"
        _wait_dashboard(dash)
        out["nodes"] = [n.node_id for n in [cluster.head_node, *cluster.worker_nodes]]
        out["startup_s"] = round(time.monotonic() - t0, 1)
        stages = set(args.only.split(","))
        if "preflight" in stages:
            out["preflight_gpu"] = run_cluster_submit(dash, shared, "scaling.use_gpu=true")
            out["preflight_ok"] = run_preflight_here(cluster.address, shared)
        if "training" in stages:
            out["training"] = run_training_job(dash, shared, args.steps, args.train_override)
            st = subprocess.run([sys.executable, "-m", "cluster", "status", "--address", dash, "--json"], cwd=REPO,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
            out["status"] = last_json(st.stdout) or {"error": st.stderr[-2000:]}
        if "serving" in stages:
            out["serving"] = run_serving(cluster.address)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    print(json.dumps(out))
    return 0


def _wait_dashboard(dash: str, timeout_s: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{dash}/api/version", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"dashboard at {dash} did not come up in {timeout_s}s")


if __name__ == "__main__":
    sys.exit(main())
