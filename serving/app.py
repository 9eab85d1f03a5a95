"""Building and running the Serve application from a ServeConfig.

`build_app({"config": path})` is the builder `serve run` / `serve deploy` point at by import path;
`start(config, port)` / `stop()` let the demo and tests run it in-process and wait until it is healthy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from core.errors import UserError
from serving.config import ServeConfig, resolve_path

VLLM_ENV = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn", "TOKENIZERS_PARALLELISM": "false"}
_running: dict[str, Any] = {}


def load_config(
    config: str | Path | ServeConfig | dict[str, Any], overrides: list[str] | None = None
) -> ServeConfig:
    if isinstance(config, ServeConfig):
        return config
    if isinstance(config, dict):
        return ServeConfig.from_dict(config, overrides)
    return ServeConfig.from_file(resolve_path(str(config)), overrides)


def build(cfg: ServeConfig) -> Any:
    """The application graph: Router(ingress) -> LLMServer (multiplexed) and Retriever."""
    from core.ray_conn import runtime_env_vars
    from serving.llm import make_llm_deployment
    from serving.retriever import RetrieverServer
    from serving.router import Router

    env = {"env_vars": {**runtime_env_vars(), **VLLM_ENV}}
    llm_opts = cfg.model.replicas.deployment_options()
    llm_opts["ray_actor_options"]["runtime_env"] = env
    store = resolve_path(cfg.adapters.store)
    llm = (
        make_llm_deployment(cfg.model.max_loaded_adapters)
        .options(**llm_opts)
        .bind(cfg.model.model_dump(), store)
    )
    retriever = None
    if cfg.retriever.enabled:
        retriever = RetrieverServer.options(**cfg.retriever.replicas.deployment_options()).bind(
            cfg.retriever.model_dump()
        )
    return Router.options(**cfg.router.replicas.deployment_options()).bind(cfg.model_dump(), llm, retriever)


def build_app(args: dict[str, Any]) -> Any:
    """Serve app builder: `serve run serving.app:build_app config=serving/configs/local.yaml`."""
    if "config" not in args:
        raise UserError("build_app needs a 'config' argument: the path of a ServeConfig YAML file")
    overrides = args.get("overrides") or []
    if isinstance(overrides, str):
        overrides = [o for o in overrides.split(",") if o]
    return build(load_config(args["config"], overrides))


def start(
    config: str | Path | ServeConfig | dict[str, Any],
    port: int | None = None,
    overrides: list[str] | None = None,
    timeout_s: float = 600,
) -> str:
    """Run the app on this Ray cluster (local by default), wait for /healthz, and return its base URL."""
    import httpx
    from ray import serve

    from core.ray_conn import connect

    cfg = load_config(config, overrides)
    port = port or cfg.router.port
    connect()
    serve.start(http_options={"host": cfg.router.host, "port": port}, detached=False)
    serve.run(build(cfg), name=cfg.app_name, route_prefix="/", blocking=False)
    url = f"http://{cfg.router.host}:{port}"
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        failed = deploy_failure(cfg.app_name)
        if failed:
            serve.delete(cfg.app_name)
            raise UserError(f"the serving app failed to deploy: {failed}", 1)
        try:
            r = httpx.get(f"{url}/healthz", timeout=10)
            if r.status_code == 200:
                _running[cfg.app_name] = url
                return url
            last = r.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(1)
    raise UserError(f"the serving app did not become healthy at {url} within {timeout_s:.0f}s: {last}")


def deploy_failure(app_name: str) -> str | None:
    """Serve's reason when a replica constructor keeps failing (e.g. no memory for the KV cache), else None.

    Without this a failing constructor is retried until the health deadline, and the cause stays in replica logs.
    """
    from ray import serve

    try:
        app = serve.status().applications.get(app_name)
    except Exception:  # noqa: BLE001 - status is advisory while the controller starts
        return None
    if app is None or str(app.status) not in ("DEPLOY_FAILED", "ApplicationStatus.DEPLOY_FAILED"):
        return None
    for dep in app.deployments.values():
        if "UNHEALTHY" in str(dep.status) or "FAILED" in str(dep.status):
            return _useful_line(dep.message) or app.message
    return _useful_line(app.message) or "unknown reason"


def _useful_line(message: str) -> str:
    """The user-facing line of a wrapped replica traceback (our UserError text when there is one)."""
    lines = [ln.strip() for ln in (message or "").splitlines() if ln.strip()]
    for marker in ("UserError: ", "ValueError: ", "RuntimeError: "):
        for ln in reversed(lines):
            if marker in ln:
                return ln.split(marker, 1)[1]
    return lines[-1] if lines else ""


def stop(app_name: str | None = None) -> None:
    """Delete the app (all of them if none is named) and stop Serve's proxy in this cluster."""
    from ray import serve

    if app_name:
        serve.delete(app_name)
        _running.pop(app_name, None)
        return
    serve.shutdown()
    _running.clear()
