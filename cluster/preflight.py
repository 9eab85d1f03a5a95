"""Preflight for a training run on a Ray cluster: fail before anything is scheduled, naming the shortfall.

Ray itself would accept a job that asks for GPUs the cluster does not have and wait forever for them, and a
checkpoint path that only exists on the head node surfaces as a failure minutes into training on a worker.
This checks both up front: resources against the training config, and storage by running a tiny task on
every alive node that writes a probe, then reads every other node's probe (so "shared" is actually shared).

    python -m cluster preflight --config training/configs/tiny-qlora.yaml [key=value ...] [--address ADDR] [--json]
"""

from __future__ import annotations

import argparse
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from core import storage
from core.cli import add_json_flag, emit, log
from core.errors import UserError
from core.net import probe
from core.ray_auth import auth_error_hint, enable_client_auth

PROBE_TIMEOUT_S = 60.0


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def check_resources(cfg: Any, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Can the Ray Train worker group of `cfg` (a TrainConfig) be placed on these nodes at all?"""
    sc = cfg.scaling
    per_worker = {"CPU": sc.cpus_per_worker, **({"GPU": 1.0} if sc.use_gpu else {})}
    totals: dict[str, float] = {}
    for n in nodes:
        for k, v in n["Resources"].items():
            totals[k] = totals.get(k, 0.0) + v
    need = {k: v * sc.num_workers for k, v in per_worker.items()}
    problems = []
    for res, amount in need.items():
        have = totals.get(res, 0.0)
        if have < amount:
            flag = "scaling.use_gpu=true" if res == "GPU" else f"scaling.cpus_per_worker={sc.cpus_per_worker}"
            problems.append(
                f"training needs {amount:g} {res} ({sc.num_workers} workers, {flag}) but the cluster has "
                f"{have:g} {res} across {len(nodes)} alive node(s)"
            )
    fitting = [n for n in nodes if all(n["Resources"].get(k, 0.0) >= v for k, v in per_worker.items())]
    if sc.placement_strategy == "STRICT_SPREAD" and len(fitting) < sc.num_workers:
        problems.append(
            f"scaling.placement_strategy=STRICT_SPREAD needs {sc.num_workers} nodes that each fit one worker "
            f"({per_worker}), but only {len(fitting)} of {len(nodes)} alive node(s) do"
        )
    return {"need": need, "cluster": totals, "nodes": len(nodes), "problems": problems}


def _probe(uri: str, token: str, peers: list[str], phase: str) -> dict[str, Any]:
    """Runs on one node: write this node's probe file (phase 'write') or read every peer's (phase 'read')."""
    import ray

    from core import storage as st

    node = ray.get_runtime_context().get_node_id()
    host = socket.gethostname()
    try:
        if phase == "write":
            if not st.is_remote(uri):
                if not Path(st.strip_file_scheme(uri)).is_dir():
                    return {"node": node, "host": host, "error": f"{uri} does not exist on this node"}
            st.write_text_atomic(st.join(uri, f".preflight-{token}-{node}"), node)
            return {"node": node, "host": host, "error": None}
        missing = [p for p in peers if not st.exists(st.join(uri, f".preflight-{token}-{p}"))]
        err = (
            f"cannot see probe files written by node(s) {', '.join(m[:8] for m in missing)}"
            if missing
            else None
        )
        return {"node": node, "host": host, "error": err}
    except Exception as exc:  # noqa: BLE001 - every failure is a finding to report, not a crash
        return {"node": node, "host": host, "error": f"{type(exc).__name__}: {exc}"}


def check_storage(
    uri: str, nodes: list[dict[str, Any]], timeout_s: float = PROBE_TIMEOUT_S
) -> dict[str, Any]:
    """Write a probe from every node, then read all probes from every node; clean up; report per node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    token = uuid.uuid4().hex[:8]
    ids = [n["NodeID"] for n in nodes]

    def run(phase: str, peers: list[str]) -> list[dict[str, Any]]:
        refs = {
            nid: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False)).remote(
                uri, token, peers, phase
            )
            for nid in ids
        }
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        out = []
        for nid, ref in refs.items():
            if ref in ready:
                out.append(ray.get(ref))
            else:
                out.append(
                    {"node": nid, "host": "?", "error": f"probe task did not finish in {timeout_s:g}s"}
                )
        return out

    written = run("write", [])
    ok_writers = [r["node"] for r in written if r["error"] is None]
    read = run("read", ok_writers) if ok_writers else []
    problems = [f"node {r['node'][:8]} ({r['host']}): {r['error']}" for r in written + read if r["error"]]
    for nid in ok_writers:
        try:
            storage.remove_file(storage.join(uri, f".preflight-{token}-{nid}"))
        except OSError:
            pass
    if problems:
        problems = [f"storage {uri} is not usable from every node: " + "; ".join(problems)]
    return {"uri": uri, "nodes_checked": len(ids), "problems": problems}


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A TCP probe of a GCS address first: ray.init would retry an unreachable one for minutes."""
    if not address or address in ("auto", "local") or address.startswith(("http://", "https://")):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        raise UserError(f"Ray address {address!r} must look like HOST:PORT (e.g. 127.0.0.1:6379)")
    probe(
        host or "127.0.0.1",
        int(port),
        timeout_s,
        f"the Ray cluster at {address}",
        "is it up (ray up / ray start)?",
    )


def run_preflight(cfg: Any, address: str | None = None) -> dict[str, Any]:
    """All checks for one TrainConfig; raise UserError naming every shortfall, else return the findings."""
    from core.ray_conn import connect

    t0 = time.monotonic()
    _check_reachable(address or os.environ.get("RAY_ADDRESS"))
    try:
        connect(address)
    except Exception as exc:  # noqa: BLE001 - unreachable cluster is a user-facing condition
        where = address or os.environ.get("RAY_ADDRESS") or "local"
        hint = auth_error_hint(where, exc)
        raise UserError(hint or f"cannot reach the Ray cluster at {where}: {exc}") from None
    nodes = alive_nodes()
    resources = check_resources(cfg, nodes)
    uris = [cfg.run.storage_path or str(storage.data_dir() / "runs")]
    store = cfg.output.store or str(storage.data_dir() / "adapters")
    if store not in uris:
        uris.append(store)
    for (
        u
    ) in uris:  # create it here (the driver's node); other nodes must then see it through the shared mount
        if not storage.is_remote(u):
            try:
                Path(storage.strip_file_scheme(u)).mkdir(parents=True, exist_ok=True)
            except OSError:
                pass  # reported per node by the probes below
    checks = [check_storage(u, nodes) for u in uris]
    problems = resources["problems"] + [p for c in checks for p in c["problems"]]
    result = {
        "ok": not problems,
        "nodes": len(nodes),
        "resources": {k: resources[k] for k in ("need", "cluster")},
        "storage": [{"uri": c["uri"], "nodes_checked": c["nodes_checked"]} for c in checks],
        "problems": problems,
        "seconds": round(time.monotonic() - t0, 2),
    }
    if problems:
        raise UserError("preflight failed: " + " | ".join(problems))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster preflight", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="training config YAML (training/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, as for python -m training")
    parser.add_argument(
        "--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local Ray)"
    )
    add_json_flag(parser)
    args = parser.parse_args(argv)
    from training.config import TrainConfig

    cfg = TrainConfig.from_file(args.config, args.overrides)
    log(f"preflight for {args.config} ({cfg.scaling.num_workers} workers, use_gpu={cfg.scaling.use_gpu})")
    if args.address or os.environ.get("RAY_ADDRESS"):
        # A default Ray 2.60 head wants its token. Token mode is switched on for this CLI process only: inside a
        # longer-lived process (a test, a notebook) it would change how every later ray.init/Serve call talks.
        enable_client_auth()
    result = run_preflight(cfg, args.address)
    emit(
        result,
        args.json,
        lambda r: (
            f"preflight ok: {r['nodes']} node(s), resources {r['resources']['need']} available, "
            f"storage writable and shared: {', '.join(s['uri'] for s in r['storage'])}"
        ),
    )
    return 0
