"""`python -m training --config FILE [key=value ...]`: validate everything on the driver, then run Ray Train's
TorchTrainer (DeepSpeed + PEFT on every worker) and publish the adapter.

    python -m training --config training/configs/tiny-qlora.yaml --json
    ray job submit --working-dir . -- python -m training --config training/configs/llama3-8b-lora.yaml
    python -m training validate --config training/configs/llama2-70b-qlora.yaml
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from core import storage
from core.cli import add_json_flag, emit, log
from core.errors import UserError
from core.fingerprint import is_hub_id
from training.config import TrainConfig
from training.model import check_target_modules, resolve_model_path


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Fine-tune a model with LoRA/QLoRA on Ray Train.")
    p.add_argument("--config", required=True, help="training YAML (see training/configs/)")
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. optim.max_steps=20 scaling.num_workers=1"
    )
    add_json_flag(p)
    return p


def load_config(args: argparse.Namespace) -> TrainConfig:
    overrides = list(args.overrides)
    if getattr(args, "output_dir", None):
        overrides.append(f"run.storage_path={args.output_dir}")
    if getattr(args, "force", False):
        overrides.append("preflight.force=true")
    return TrainConfig.from_file(args.config, overrides)


def check(cfg: TrainConfig) -> dict[str, Any]:
    """Driver-side checks that need the model but no workers: path, targets, 4-bit support, memory."""
    model_path = resolve_model_path(cfg.model.path)
    targets = check_target_modules(cfg, model_path)
    if cfg.model.method == "qlora":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise UserError("model.method qlora needs bitsandbytes: pip install bitsandbytes") from None
    if cfg.tracking.mlflow_uri:
        from training.metrics import require_mlflow

        require_mlflow()
    return {"model_path": model_path, "target_modules": targets, "preflight": run_preflight(cfg, model_path)}


def load_model_files(model_path: str) -> None:
    """Config and tokenizer load on the driver first, so a mistyped or uncached hub id is one clear error
    instead of a traceback from inside a Ray Data task."""
    from transformers import AutoConfig

    from training.data import tokenizer_for

    try:
        AutoConfig.from_pretrained(model_path)
        tokenizer_for(model_path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"model.path: cannot load {model_path!r} ({first}); give a local model folder, a cached hub id "
            "(HF_HUB_OFFLINE=1 reads only the local cache) or 'tiny'"
        ) from None


def run_preflight(cfg: TrainConfig, model_path: str) -> dict[str, Any] | None:
    """Memory planner before GPU workers start (raises UserError with its numbers unless forced)."""
    try:
        from training.planner import PlanSpec, preflight
    except ImportError:
        log("note: memory planner (training.planner) not available; preflight skipped")
        return None
    gpu_gb = cfg.preflight.gpu_memory_gb
    if gpu_gb is None:
        import torch

        if torch.cuda.is_available():
            gpu_gb = torch.cuda.get_device_properties(0).total_memory / 1024**3
    if gpu_gb is None:
        if cfg.scaling.use_gpu:
            log("note: no GPU on the driver and no preflight.gpu_memory_gb; memory preflight skipped")
        return None
    spec = PlanSpec(
        model=model_path,
        method=cfg.model.method,
        gpus=cfg.scaling.num_workers,
        gpu_memory_gb=gpu_gb,
        zero=cfg.deepspeed.zero_stage,
        offload=cfg.deepspeed.offload,
        seq_len=cfg.data.max_seq_len,
        micro_batch=cfg.optim.micro_batch_size,
        lora_r=cfg.lora.r,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
    )
    if not cfg.scaling.use_gpu:
        try:
            est = preflight(spec, force=True)
        except UserError as exc:  # informational only on CPU
            log(f"note: planner: {exc}")
            return None
        log(f"planner (informational, CPU run): about {est.per_gpu_gb:.1f} GB per worker on a GPU")
        return est.to_dict()
    est = preflight(spec, force=cfg.preflight.force)
    log(
        f"preflight: about {est.per_gpu_gb:.1f} GB per GPU of {gpu_gb:.0f} GB"
        + ("" if est.fits else " (forced)")
    )
    return est.to_dict()


def run_dirs(cfg: TrainConfig) -> tuple[str, Path]:
    """Ray Train storage path, and a local run folder for metrics and the loss curve."""
    storage_path = cfg.run.storage_path or str(storage.data_dir() / "runs")
    if storage.is_remote(storage_path):
        return storage_path, storage.data_dir() / "runs" / cfg.run.name
    storage_path = str(Path(storage_path).expanduser().resolve())
    return storage_path, Path(storage_path) / cfg.run.name


def train(cfg: TrainConfig, checked: dict[str, Any]) -> dict[str, Any]:
    """Run the trainer and publish; returns the result summary."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from core.ray_conn import connect
    from training.data import build_datasets, tokenizer_for
    from training.loop import train_loop
    from training.publish import publish

    model_path = checked["model_path"]
    connect()
    started = time.time()
    storage_path, run_dir = run_dirs(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    data_cfg, raft = cfg.data, None
    if cfg.data.rag_context is not None and cfg.data.rag_context.enabled:  # RAFT: train on retrieved context
        from training.raft import prepare

        data_cfg, raft = prepare(cfg.data, run_dir)
    train_ds, val_ds, report = build_datasets(data_cfg, model_path, cfg.scaling.num_workers)
    log(
        f"data: {report.rows} rows, {report.bad_rows} bad, {report.truncated} truncated, "
        f"{report.train_sequences} train / {report.validation_sequences} validation sequences"
    )
    datasets = {"train": train_ds} | ({"validation": val_ds} if val_ds is not None else {})
    loop_config = {
        "config": cfg.model_dump(mode="json"),
        "model_path": model_path,
        "base_model": model_path,
        "pad_id": tokenizer_for(model_path).pad_token_id,
        "has_validation": val_ds is not None,
        "status_dir": str(run_dir / "workers"),
        "run_dir": str(run_dir),
    }
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker}
            | ({"GPU": 1} if cfg.scaling.use_gpu else {}),
            placement_strategy=cfg.scaling.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=cfg.run.name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.num_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
        ),
        datasets=datasets,
    )
    log(
        f"training {cfg.run.name}: {cfg.scaling.num_workers} workers, ZeRO-{cfg.deepspeed.zero_stage}, {cfg.model.method}"
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors; show one line, keep the cause in logs
        first = str(exc).strip().splitlines()
        raise UserError(
            f"training failed: {first[0] if first else type(exc).__name__} (see the log above)", 1
        ) from None
    if result.checkpoint is None:
        raise UserError("training finished without a checkpoint (see the log above)", 1)
    with result.checkpoint.as_directory() as ckpt:
        out = publish(cfg, Path(ckpt), model_path, report, run_dir)
    out["wall_s"] = time.time() - started
    if raft is not None:
        out["raft"] = raft
    return out


def main(argv: list[str] | None = None) -> int:
    p = _parser("python -m training")
    p.add_argument("--output-dir", help="Ray Train storage folder for this run (overrides run.storage_path)")
    p.add_argument(
        "--force", action="store_true", help="launch even if the memory preflight says it will not fit"
    )
    args = p.parse_intermixed_args(argv)  # overrides may follow flags
    cfg = load_config(args)
    checked = check(cfg)
    load_model_files(checked["model_path"])  # here, not in check(): `validate` must work without the weights
    result = train(cfg, checked)
    emit(
        result,
        args.json,
        lambda r: (
            f"adapter {r['adapter_name']} at {r['adapter_path']}: loss {r['initial_loss']:.3f} -> "
            f"{r['final_loss']:.3f} in {r['steps']} steps, {r['tokens_per_s']:,.0f} tok/s"
            + (
                f"; held-out loss {r['initial_eval_loss']:.3f} -> {r['eval_loss']:.3f}"
                if "initial_eval_loss" in r and "eval_loss" in r
                else ""
            )
        ),
    )
    return 0


def validate_main(argv: list[str] | None = None) -> int:
    """Check a config (and the model path and LoRA targets) without starting Ray."""
    args = _parser("python -m training validate").parse_intermixed_args(argv)
    cfg = load_config(args)
    info: dict[str, Any] = {"valid": True, "config": args.config, "run": cfg.run.name}
    path = cfg.model.path
    if not is_hub_id(path):  # tiny, a local folder, or a path that does not exist (reported by check)
        checked = check(cfg)
        info.update(model_path=checked["model_path"], target_modules=checked["target_modules"])
    else:
        info["note"] = f"model {cfg.model.path} is not local: path and target modules are checked at launch"
        info["preflight"] = run_preflight(cfg, cfg.model.path)
    emit(info, args.json, lambda r: f"{r['config']}: valid" + (f" ({r['note']})" if "note" in r else ""))
    return 0
