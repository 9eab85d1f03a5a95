"""Connecting to Ray: an embedded local cluster by default, a real one by `address=` or `RAY_ADDRESS`.

Locally we advertise more logical CPUs than cores (STACK.md: Serve LLM replicas and 2 Train workers do not
schedule on `num_cpus=2`); the object store is kept small so tests and the demo fit beside vLLM.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

LOCAL_NUM_CPUS = 8
LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2
# Ray resolves "127.0.0.1" to the machine's routable address unless clustering is off; with it off, a local
# cluster (and its workers, which inherit the environment) binds to the loopback address only.
LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "VLLM_HOST_IP": "127.0.0.1"}


def use_loopback_only() -> None:
    """Pin this process and its children to 127.0.0.1 for Ray (local clusters, tests, the demo)."""
    os.environ.update(LOCAL_ONLY_ENV)
    try:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # already imported: the env var alone is read too late
    except ImportError:
        pass


# Passed from the driver's environment to every Ray worker when set (HF_TOKEN: gated models download on workers).
FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "DE_DATA_DIR",
    "HF_TOKEN",
)


def runtime_env_vars() -> dict[str, str]:
    """Environment every Ray worker of this project gets (offline model hubs, quiet tokenizers, hub token)."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _without_job_keys(runtime_env: dict[str, Any]) -> dict[str, Any]:
    """Inside a `ray job submit` entrypoint, drop env vars the job's runtime_env already sets.

    Ray refuses to merge a job's runtime_env with ray.init's when both set the same env var key.
    """
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return runtime_env
    import json

    job_vars = ((json.loads(raw).get("runtime_env") or {}).get("env_vars")) or {}
    env_vars = {k: v for k, v in (runtime_env.get("env_vars") or {}).items() if k not in job_vars}
    return {**runtime_env, "env_vars": env_vars}


STATE_API_NOISE = "Failed to query Ray Train Controller actor state"


def quiet_state_api_hook() -> Callable[[], None]:
    """A worker setup hook for local clusters without a dashboard: the state API needs the dashboard, so Ray Train's
    placement-group cleaner warns that it "failed to query" once a second for a whole training run (Ray 2.60).
    Only that message is dropped. Without the state API the cleaner can never see the controller die anyway; on a
    local cluster its placement group goes with the cluster.

    A closure over stdlib only, so Ray pickles it by value: a hook importing this project would kill every worker
    whose sys.path lacks the repository (and Ray restarts them forever)."""
    noise = STATE_API_NOISE

    def hook() -> None:
        import logging

        logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").addFilter(
            lambda record: not str(record.msg).startswith(noise)
        )

    return hook


def connect(address: str | None = None, num_cpus: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """Initialise Ray once per process and return its cluster resources.

    `address` (or RAY_ADDRESS) joins an existing cluster; otherwise a local one starts on 127.0.0.1.
    Under `ray job submit` Ray is already initialised by the job driver and is reused as is.
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = _without_job_keys(kwargs.pop("runtime_env", None) or {"env_vars": runtime_env_vars()})
    if address:
        ray.init(address=address, runtime_env=runtime_env, **kwargs)
    else:
        use_loopback_only()
        dashboard = kwargs.pop("include_dashboard", False)
        if not dashboard:
            runtime_env.setdefault("worker_process_setup_hook", quiet_state_api_hook())
        ray.init(
            num_cpus=num_cpus or int(os.environ.get("DE_LOCAL_NUM_CPUS", LOCAL_NUM_CPUS)),
            object_store_memory=kwargs.pop("object_store_memory", LOCAL_OBJECT_STORE_BYTES),
            include_dashboard=dashboard,
            _node_ip_address="127.0.0.1",
            runtime_env=runtime_env,
            **kwargs,
        )
    return ray.cluster_resources()
