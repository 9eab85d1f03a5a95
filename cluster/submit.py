"""`python -m cluster submit` and `status`: Ray job submission with this project's runtime_env built in.

The plain `ray job submit --working-dir . -- python -m training ...` works as is (the working-dir upload
honours .gitignore, so .venv/ and data/ stay behind). This wrapper adds what people otherwise forget: the
offline/env variables every worker needs, explicit excludes for local artefacts, log tailing until the job
ends, and an exit code that follows the job, so it can sit in CI or a Makefile.

    python -m cluster submit [--address http://127.0.0.1:8265] [--no-wait] [--json] -- python -m training --config FILE
    python -m cluster status [--address ...] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from core.cli import add_json_flag, emit, log
from core.errors import UserError
from core.ray_auth import auth_error_hint, enable_client_auth
from core.ray_conn import runtime_env_vars
from core.storage import REPO_ROOT

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
EXCLUDES = [".git", ".venv", "data", "runs", "**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def dashboard_address(address: str | None) -> str:
    """The job API talks to the dashboard (http://host:8265), not to the GCS port."""
    addr = (
        address
        or os.environ.get("RAY_API_SERVER_ADDRESS")
        or os.environ.get("RAY_ADDRESS")
        or DEFAULT_ADDRESS
    )
    if not addr.startswith(("http://", "https://")):
        raise UserError(
            f"job submission needs the dashboard URL (e.g. {DEFAULT_ADDRESS}), got {addr!r}; pass --address http://HOST:8265"
        )
    return addr


def client(address: str | None):
    """A job client for the dashboard at `address` (the CLIs switch token mode on first: core.ray_auth)."""
    from ray.job_submission import JobSubmissionClient

    addr = dashboard_address(address)
    try:
        return JobSubmissionClient(addr)
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types; all mean "unreachable"
        hint = auth_error_hint(addr, exc)
        if hint:
            raise UserError(hint) from None
        raise UserError(
            f"cannot reach the Ray dashboard at {addr}: {exc}; is the cluster up (ray up / ray start)?"
        ) from None


def project_runtime_env(working_dir: str | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """runtime_env for this repository: code from the working dir, local artefacts excluded, env vars set."""
    env_vars = {**runtime_env_vars(), "PYTHONUNBUFFERED": "1", **(env or {})}
    return {"working_dir": working_dir or str(REPO_ROOT), "excludes": EXCLUDES, "env_vars": env_vars}


async def _tail(c: Any, job_id: str) -> None:
    async for lines in c.tail_job_logs(job_id):
        sys.stderr.write(lines)
        sys.stderr.flush()


def wait(c: Any, job_id: str, follow: bool = True, timeout_s: float | None = None) -> str:
    """Stream the job's logs to stderr (if `follow`) and return its terminal status."""
    if follow:
        try:
            asyncio.run(_tail(c, job_id))
        except Exception as exc:  # noqa: BLE001 - a broken log stream must not lose the job's status
            log(f"(log stream ended: {exc})")
    deadline = time.monotonic() + (timeout_s or float("inf"))
    while True:
        status = c.get_job_status(job_id).value
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            return status
        time.sleep(1.0)


def submit(
    entrypoint: list[str],
    address: str | None = None,
    follow: bool = True,
    env: dict[str, str] | None = None,
    working_dir: str | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    import shlex

    if not entrypoint:
        raise UserError(
            "nothing to run: put the command after `--`, e.g. -- python -m training --config FILE"
        )
    c = client(address)
    t0 = time.monotonic()
    job_id = c.submit_job(
        entrypoint=shlex.join(entrypoint), runtime_env=project_runtime_env(working_dir, env)
    )
    log(f"submitted {job_id} to {dashboard_address(address)}: {shlex.join(entrypoint)}")
    status = wait(c, job_id, follow, timeout_s) if follow else c.get_job_status(job_id).value
    info = c.get_job_info(job_id)
    return {
        "job_id": job_id,
        "status": status,
        "message": info.message,
        "seconds": round(time.monotonic() - t0, 1),
        "address": dashboard_address(address),
    }


def status(address: str | None = None) -> dict[str, Any]:
    """Nodes, resources and the latest jobs of a cluster, from its dashboard."""
    from ray.util.state import list_nodes

    c = client(address)
    addr = dashboard_address(address)
    jobs = sorted(c.list_jobs(), key=lambda j: j.start_time or 0, reverse=True)[:10]
    nodes = list_nodes(address=addr, limit=1000, raise_on_missing_output=False)
    resources: dict[str, float] = {}
    for n in nodes:
        if n.state == "ALIVE":
            for k, v in (n.resources_total or {}).items():
                if not k.startswith("node:"):
                    resources[k] = resources.get(k, 0.0) + v
    return {
        "address": addr,
        "nodes": [
            {"node_id": n.node_id, "ip": n.node_ip, "state": n.state, "head": n.is_head_node} for n in nodes
        ],
        "resources": resources,
        "jobs": [
            {"job_id": j.submission_id, "status": str(j.status.value), "entrypoint": j.entrypoint}
            for j in jobs
        ],
    }


def submit_main(argv: list[str] | None = None) -> int:
    args_list = list(argv or [])
    entry: list[str] = []
    if "--" in args_list:
        i = args_list.index("--")
        args_list, entry = args_list[:i], args_list[i + 1 :]
    parser = argparse.ArgumentParser(prog="python -m cluster submit", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--address", default=None, help=f"dashboard URL (default: RAY_ADDRESS or {DEFAULT_ADDRESS})"
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="return after submitting instead of tailing logs"
    )
    parser.add_argument(
        "--env", action="append", default=[], help="extra KEY=VALUE for the job's environment"
    )
    parser.add_argument("--working-dir", default=None, help="code to upload (default: this repository)")
    add_json_flag(parser)
    args = parser.parse_args(args_list)
    env = {}
    for item in args.env:
        if "=" not in item:
            raise UserError(f"--env {item!r} must look like KEY=VALUE")
        k, v = item.split("=", 1)
        env[k] = v
    enable_client_auth()  # this CLI process only (see core.ray_auth)
    result = submit(entry, args.address, follow=not args.no_wait, env=env, working_dir=args.working_dir)
    emit(
        result,
        args.json,
        lambda r: f"job {r['job_id']}: {r['status']} after {r['seconds']}s ({r['message']})",
    )
    if args.no_wait:
        return 0
    return 0 if result["status"] == "SUCCEEDED" else 1


def status_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster status", description="nodes, resources and recent jobs"
    )
    parser.add_argument(
        "--address", default=None, help=f"dashboard URL (default: RAY_ADDRESS or {DEFAULT_ADDRESS})"
    )
    add_json_flag(parser)
    args = parser.parse_args(argv)
    enable_client_auth()  # this CLI process only (see core.ray_auth)
    result = status(args.address)

    def human(r: dict[str, Any]) -> str:
        lines = [
            f"{r['address']}: {sum(n['state'] == 'ALIVE' for n in r['nodes'])} alive node(s), {r['resources']}"
        ]
        lines += [f"  {j['job_id']}  {j['status']:<9}  {j['entrypoint']}" for j in r["jobs"]]
        return "\n".join(lines)

    emit(result, args.json, human)
    return 0
