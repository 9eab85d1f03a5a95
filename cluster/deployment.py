"""Offline checks that the shipped deployment agrees with itself: Serve deploy files, GPU training configs and
the cluster they are meant for (`python -m cluster validate` runs these after the launcher and manifest checks).

Each check is a contradiction found in a real review: a Serve file that Serve's own schema rejects, a GPU config
sized for 80 GB cards on a cluster of 24 GB ones, storage that only one node sees, the driver-only tiny model
scheduled on GPU workers, a gated model with no Hugging Face token reaching the workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.errors import UserError
from core.storage import REPO_ROOT, is_remote

# GPU memory per card by EC2 instance family (the launcher's node types name instances, not GPUs).
GPU_GB_BY_FAMILY = {
    "g4dn": 16,
    "g5": 24,
    "g6": 24,
    "g6e": 48,
    "p3": 16,
    "p4d": 40,
    "p4de": 80,
    "p5": 80,
    "p5e": 141,
}
GATED_PREFIXES = ("meta-llama/", "mistralai/", "google/gemma")  # need a Hugging Face token to download
SERVE_DEPLOY_GLOB = "serving/configs/serve-deploy-*.yaml"


def gpu_node_types(launcher_cfg: dict[str, Any]) -> dict[str, int]:
    """{node type: GB per GPU} for the launcher's GPU node types."""
    out: dict[str, int] = {}
    for name, node in (launcher_cfg.get("available_node_types") or {}).items():
        family = str((node.get("node_config") or {}).get("InstanceType", "")).split(".")[0]
        if family in GPU_GB_BY_FAMILY:
            out[name] = GPU_GB_BY_FAMILY[family]
    return out


def shared_mounts(launcher_cfg: dict[str, Any]) -> list[str]:
    """Paths every node has the same content at (the launcher's file_mounts targets)."""
    return [str(k) for k in (launcher_cfg.get("file_mounts") or {})]


def check_serve_deploy(doc: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Serve's own schema (what `serve deploy` and a RayService apply), then each application's ServeConfig."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    from cluster.manifests import serve_app

    try:
        ServeDeploySchema.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{where}: {loc}: {first['msg']} (Serve's schema)") from None
    apps = doc.get("applications") or []
    if not apps:
        raise UserError(f"{where}: no applications")
    return [serve_app(app, where) for app in apps]


def check_gpu_training(
    path: Path, launcher_cfg: dict[str, Any], overrides: list[str] | None = None
) -> dict[str, Any]:
    """A GPU training config must fit the cluster it is shipped for; CPU configs are for one machine and pass."""
    from training.config import TrainConfig

    where = path.name if not overrides else f"{path.name} (with {' '.join(overrides)})"
    cfg = TrainConfig.from_file(path, overrides or [])
    if not cfg.scaling.use_gpu:
        return {"config": path.name, "gpu": False}
    if cfg.model.path == "tiny":
        raise UserError(
            f"{where}: model.path tiny is built on the driver only and is a shape test; a GPU run needs a real "
            "model (a hub id or a path every node sees)"
        )
    gpus = gpu_node_types(launcher_cfg)
    sizes = sorted(set(gpus.values()))
    if cfg.preflight.gpu_memory_gb is None or int(cfg.preflight.gpu_memory_gb) not in sizes:
        offered = ", ".join(f"{n} {gb} GB" for n, gb in gpus.items()) or "none"
        raise UserError(
            f"{where}: preflight.gpu_memory_gb is {cfg.preflight.gpu_memory_gb}, but the cluster's GPU node types "
            f"have {offered}; size the config for a card the cluster has"
        )
    mounts = shared_mounts(launcher_cfg)
    for key, value in (("run.storage_path", cfg.run.storage_path), ("output.store", cfg.output.store)):
        shared = any(value == m or value.startswith(m.rstrip("/") + "/") for m in mounts) if value else False
        if value is None or not (is_remote(value) or shared):
            raise UserError(
                f"{where}: {key} is {value!r}, which only the node writing it would see; use s3:// (as "
                "ray_cluster.yaml does) or a path the launcher mounts on every node"
            )
    return {
        "config": path.name,
        "gpu": True,
        "gpu_memory_gb": cfg.preflight.gpu_memory_gb,
        "model": cfg.model.path,
    }


def check_hf_token(model: str, env_names: set[str], where: str) -> None:
    """A gated model downloads only with a token: it must reach every worker's environment."""
    if model.startswith(GATED_PREFIXES) and "HF_TOKEN" not in env_names:
        raise UserError(
            f"{where}: {model} is gated on the Hugging Face Hub; give the workers HF_TOKEN (a Secret in the pod "
            "env, or exported where `python -m cluster submit` runs: it forwards HF_TOKEN)"
        )


def pod_env_names(cluster_spec: dict[str, Any]) -> set[str]:
    """Env var names every container of a RayCluster spec sets (head and all worker groups)."""
    groups = [cluster_spec.get("headGroupSpec") or {}, *(cluster_spec.get("workerGroupSpecs") or [])]
    per_group = []
    for g in groups:
        containers = ((g.get("template") or {}).get("spec") or {}).get("containers") or []
        per_group.append({e.get("name") for c in containers for e in (c.get("env") or [])})
    return set.intersection(*per_group) if per_group else set()


def validate_deployment(launcher_cfg: dict[str, Any]) -> dict[str, Any]:
    """Every shipped Serve deploy file and GPU training config, against Serve's schema and the launcher."""
    from core.ray_conn import FORWARDED_ENV

    serve_files = {}
    for path in sorted(REPO_ROOT.glob(SERVE_DEPLOY_GLOB)):
        doc = yaml.safe_load(path.read_text())
        serve_files[str(path.relative_to(REPO_ROOT))] = check_serve_deploy(doc, path.name)
    training = []
    for path in sorted((REPO_ROOT / "training" / "configs").glob("*.yaml")):
        info = check_gpu_training(path, launcher_cfg)
        if info["gpu"]:
            check_hf_token(info["model"], set(FORWARDED_ENV), path.name)
        training.append(info)
    return {"serve_deploy": serve_files, "training": training}
