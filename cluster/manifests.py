"""Offline checks of the cluster definitions: `ray_cluster.yaml` and the KubeRay manifests in cluster/k8s/.

A typo in a launcher config or a manifest costs a cloud round trip (or a GPU bill) to find; these checks run
Ray's own launcher schema and this project's config models without any cloud credentials, and make sure the
three definitions agree on image, Ray version and storage.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from cluster.deployment import check_hf_token, check_serve_deploy, pod_env_names
from core.errors import UserError
from core.storage import REPO_ROOT

LAUNCHER = REPO_ROOT / "ray_cluster.yaml"
K8S_DIR = REPO_ROOT / "cluster" / "k8s"
S3_BUCKET_RE = re.compile(r"s3://([a-z0-9][a-z0-9.-]+)")


def _load(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None


def validate_launcher(path: Path = LAUNCHER) -> dict[str, Any]:
    """Fill Ray's defaults and validate against ray-schema.json, exactly as `ray up` does before launching."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping")
    try:
        prepared = prepare_config(raw)
        validate_config(prepared)
    except jsonschema.ValidationError as exc:
        loc = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise UserError(f"{path}: {loc}: {exc.message}") from None
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"{path}: {exc}") from None
    return prepared


def _need(obj: Any, where: str, *keys: str | int) -> Any:
    """obj[k1][k2]...; a missing or mistyped level is a UserError naming the dotted path, not a KeyError."""
    for i, key in enumerate(keys):
        ok = (
            isinstance(obj, dict) and key in obj
            if isinstance(key, str)
            else isinstance(obj, list) and key < len(obj)
        )
        if not ok:
            path = ".".join(str(k) for k in keys[: i + 1])
            raise UserError(f"{where}: `{path}` is missing (see the shipped file for the expected layout)")
        obj = obj[key]
    return obj


def _docs(path: Path) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    bad = [i for i, d in enumerate(docs) if not isinstance(d, dict)]
    if bad:
        raise UserError(f"{path}: document {bad[0] + 1} is not a mapping")
    return docs


def _training_entrypoint(entrypoint: str, where: str, launcher_cfg: dict[str, Any]) -> dict[str, Any]:
    """`python -m training --config FILE k=v ...`: the file must exist, the overrides must validate, and a GPU
    run must fit the cluster (cluster.deployment.check_gpu_training)."""
    from cluster.deployment import check_gpu_training
    from training.config import TrainConfig

    argv = shlex.split(entrypoint)
    if argv[:3] != ["python", "-m", "training"] or "--config" not in argv:
        raise UserError(
            f"{where}: entrypoint must be `python -m training --config FILE ...`, got {entrypoint!r}"
        )
    cfg_path = argv[argv.index("--config") + 1]
    overrides = [a for a in argv[3:] if "=" in a and not a.startswith("-")]
    if not (REPO_ROOT / cfg_path).is_file():
        raise UserError(f"{where}: training config {cfg_path} does not exist in the repository")
    cfg = TrainConfig.from_file(REPO_ROOT / cfg_path, overrides)
    check_gpu_training(REPO_ROOT / cfg_path, launcher_cfg, overrides)
    return {
        "config": cfg_path,
        "storage_path": cfg.run.storage_path,
        "store": cfg.output.store,
        "model": cfg.model.path,
    }


def serve_app(app: dict[str, Any], where: str) -> dict[str, Any]:
    """The import path must resolve to a callable and its config file must validate as a ServeConfig."""
    from serving.config import ServeConfig

    import_path = app.get("import_path", "")
    module, _, attr = import_path.partition(":")
    try:
        target = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"{where}: import_path {import_path!r} does not resolve: {exc}") from None
    if not callable(target):
        raise UserError(f"{where}: import_path {import_path!r} is not callable")
    cfg_path = (app.get("args") or {}).get("config")
    if not cfg_path or not (REPO_ROOT / cfg_path).is_file():
        raise UserError(f"{where}: args.config {cfg_path!r} does not exist in the repository")
    cfg = ServeConfig.from_file(REPO_ROOT / cfg_path)
    return {
        "import_path": import_path,
        "config": cfg_path,
        "store": cfg.adapters.store,
        "model": cfg.model.path,
    }


def _check_launcher_auth(cfg: dict[str, Any], where: str) -> None:
    """Every node starts Ray in token mode and gets the same token file (Ray 2.60 token authentication)."""
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in (cfg.get(key) or []) if "ray start" in str(c)]
        if not starts or not all("RAY_AUTH_MODE=token" in str(c) for c in starts):
            raise UserError(
                f"{where}: {key}: run `ray start` with RAY_AUTH_MODE=token so the cluster needs its token"
            )
    if not any(str(k).endswith("/.ray/auth_token") for k in (cfg.get("file_mounts") or {})):
        raise UserError(f"{where}: file_mounts: mount the token (~/.ray/auth_token) on every node")


def _images(spec: dict[str, Any], where: str) -> set[str]:
    groups = [_need(spec, where, "headGroupSpec"), *(spec.get("workerGroupSpecs") or [])]
    return {
        _need(c, where, "image") for g in groups for c in _need(g, where, "template", "spec", "containers")
    }


def validate_k8s(k8s_dir: Path = K8S_DIR, launcher: Path = LAUNCHER) -> dict[str, Any]:
    """Parse the RayJob and RayService, resolve what they reference, and check they agree with the launcher."""
    import ray

    launcher_cfg = _load(launcher)
    base_image = _need(launcher_cfg, str(launcher), "docker", "image")
    _check_launcher_auth(launcher_cfg, str(launcher))
    if not (k8s_dir / "Dockerfile").is_file():
        raise UserError(
            f"{k8s_dir / 'Dockerfile'}: file not found (the image the manifests run is built from it)"
        )
    dockerfile = (k8s_dir / "Dockerfile").read_text()
    if f"FROM {base_image}" not in dockerfile:
        raise UserError(
            f"{k8s_dir / 'Dockerfile'}: must build FROM {base_image} (the image in {launcher.name})"
        )
    ray_version = ".".join(ray.__version__.split(".")[:2])
    buckets = {"launcher": set(S3_BUCKET_RE.findall(launcher.read_text()))}
    found: dict[str, Any] = {}
    for path in sorted(k8s_dir.glob("*.yaml")):
        for doc in _docs(path):
            kind, where = doc.get("kind"), f"{path.name}"
            if kind not in ("RayJob", "RayService"):
                continue
            if doc.get("apiVersion") != "ray.io/v1":
                raise UserError(f"{where}: apiVersion must be ray.io/v1 (got {doc.get('apiVersion')!r})")
            spec = _need(doc, where, "spec")
            cluster = _need(spec, where, "rayClusterSpec" if kind == "RayJob" else "rayClusterConfig")
            if not str(cluster.get("rayVersion", "")).startswith(ray_version):
                raise UserError(
                    f"{where}: rayVersion {cluster.get('rayVersion')} differs from ray {ray.__version__}"
                )
            if (cluster.get("authOptions") or {}).get("mode") != "token":
                raise UserError(
                    f"{where}: set authOptions.mode: token (Ray 2.60 token auth; KubeRay >= 1.5.1 creates the "
                    "Secret and sets RAY_AUTH_MODE/RAY_AUTH_TOKEN on every pod)"
                )
            images = _images(cluster, where)
            if len(images) != 1:
                raise UserError(f"{where}: head and workers must run one image, found {sorted(images)}")
            env = pod_env_names(cluster)
            if kind == "RayJob":
                info = _training_entrypoint(str(_need(spec, where, "entrypoint")), where, launcher_cfg)
                job_env = (yaml.safe_load(str(spec.get("runtimeEnvYAML") or "")) or {}).get("env_vars") or {}
                env |= set(job_env)
            else:
                serve = yaml.safe_load(str(_need(spec, where, "serveConfigV2")))
                if not isinstance(serve, dict):
                    raise UserError(f"{where}: serveConfigV2 is not a mapping")
                info = check_serve_deploy(serve, f"{where} serveConfigV2")[0]
            check_hf_token(info["model"], env, where)
            info = {k: v for k, v in info.items() if k != "model"}
            text = yaml.safe_dump(info)
            buckets[where] = set(S3_BUCKET_RE.findall(text))
            found[kind] = {**info, "file": path.name, "image": images.pop()}
    missing = {"RayJob", "RayService"} - set(found)
    if missing:
        raise UserError(f"{k8s_dir}: no {' or '.join(sorted(missing))} manifest found")
    if found["RayJob"]["image"] != found["RayService"]["image"]:
        raise UserError("the RayJob and the RayService must run the same image")
    distinct = {frozenset(b) for b in buckets.values()}
    if len(distinct) != 1:
        raise UserError(
            f"storage buckets disagree between definitions: { {k: sorted(v) for k, v in buckets.items()} }"
        )
    return {**found, "bucket": sorted(buckets["launcher"])}
