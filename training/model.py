"""Model side: resolve the model path, check LoRA targets on the driver, build the DeepSpeed config, and load
the base (optionally 4-bit) with LoRA on a worker.

Under ZeRO-3 an `HfDeepSpeedConfig` is created before `from_pretrained` and kept alive, so transformers loads
weights straight into `deepspeed.zero.Init` partitions: a 70B model is never materialised whole on one rank.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.cli import log
from core.errors import UserError
from core.fingerprint import is_hub_id
from core.hardware import resolve_precision
from training.config import TINY

if TYPE_CHECKING:
    from training.config import TrainConfig

_KEEPALIVE: list[Any] = []  # HfDeepSpeedConfig must outlive from_pretrained (transformers holds a weakref)


def resolve_model_path(path: str) -> str:
    """'tiny' (or the default tiny folder when missing) builds the tiny model; 'smollm2-135m-instruct' (or its
    default folder when missing) imports the default pretrained model from its PyPI package; local folders must
    exist."""
    from training import gguf_import, tiny

    if path == gguf_import.DEFAULT_NAME or (
        Path(path).resolve() == gguf_import.default_dir().resolve() and not Path(path, "config.json").exists()
    ):
        return gguf_import.ensure_default()["path"]
    if path == TINY or (
        Path(path).resolve() == tiny.default_dir().resolve() and not Path(path, "config.json").exists()
    ):
        out = tiny.default_dir()
        log(f"building the tiny model in {out}")
        tiny.build(out)
        return str(out)
    p = Path(path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise UserError(f"model.path: {p} has no config.json (not a transformers model folder)")
        return str(p.resolve())
    if not is_hub_id(path):
        raise UserError(f"model.path: {path} does not exist (use a local model folder, a hub id or '{TINY}')")
    return path  # a hub id: from_pretrained resolves it (from the cache when HF_HUB_OFFLINE=1)


def linear_module_names(model_path: str, trust_remote_code: bool = False) -> set[str]:
    """Leaf names of linear layers, from the model built on the meta device (no weights are loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise UserError(f"model.path: cannot load {model_path}: {exc}") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def check_target_modules(cfg: TrainConfig, model_path: str) -> list[str] | str:
    """Unknown LoRA targets fail here, before workers start."""
    targets = cfg.lora.target_modules
    if targets == "all-linear":
        return targets
    names = linear_module_names(model_path, cfg.model.trust_remote_code)
    unknown = sorted(set(targets) - names)
    if unknown:
        raise UserError(
            f"lora.target_modules: {', '.join(unknown)} not in the model's linear layers "
            f"(available: {', '.join(sorted(names))}, or 'all-linear')"
        )
    return list(targets)


def deepspeed_config(cfg: TrainConfig) -> dict[str, Any]:
    """Concrete DeepSpeed JSON (no 'auto'); the optimizer is a torch.optim one passed in (no JIT build)."""
    zero: dict[str, Any] = {"stage": cfg.deepspeed.zero_stage}
    if cfg.deepspeed.zero_stage == 3:
        zero.update(
            stage3_gather_16bit_weights_on_model_save=False,
            stage3_param_persistence_threshold=cfg.deepspeed.param_persistence_threshold,
            overlap_comm=False,
        )
    if cfg.deepspeed.offload in ("optimizer", "params"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cfg.scaling.use_gpu}
    if cfg.deepspeed.offload == "params":
        zero["offload_param"] = {"device": "cpu", "pin_memory": cfg.scaling.use_gpu}
    return {
        "train_micro_batch_size_per_gpu": cfg.optim.micro_batch_size,
        "gradient_accumulation_steps": cfg.optim.grad_accum,
        "train_batch_size": cfg.optim.micro_batch_size * cfg.optim.grad_accum * cfg.scaling.num_workers,
        "gradient_clipping": cfg.optim.max_grad_norm,
        "bf16": {"enabled": precision(cfg) == "bf16"},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def precision(cfg: TrainConfig) -> str:
    """model.precision with 'auto' resolved for this process's hardware (call it on the worker)."""
    return resolve_precision(cfg.model.precision)


def compute_precision(cfg: TrainConfig) -> str:
    return precision(cfg) if cfg.quant.compute_dtype == "auto" else cfg.quant.compute_dtype


def _dtype(name: str):
    import torch

    return torch.bfloat16 if name == "bf16" else torch.float32


def disable_cpu_weight_packing(model) -> int:
    """Keep bitsandbytes from repacking 4-bit weights in place on CPU; returns the layers switched off.

    bitsandbytes 0.50's `Linear4bit.forward`, in eval mode on an AVX-512-bf16 CPU, replaces `weight.data` with a
    repacked uint8 layout and flags the shared `quant_state` as packed. Under ZeRO-3 that data is only the
    gathered copy of a partition: DeepSpeed frees it after the forward and gathers the original layout next time,
    while the flag still says "packed", so every later forward reads scrambled weights (training diverged after
    the first validation pass), and `state_dict()` then fails in the inverse repacking (assert uint8).
    """
    switched = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            switched += 1
    return switched


def load_model(cfg: TrainConfig, model_path: str, ds_config: dict[str, Any]):
    """Base model (4-bit NF4 for QLoRA, storage dtype = load dtype so ZeRO-3 can shard it) wrapped with LoRA."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = _dtype(precision(cfg))
    if cfg.deepspeed.zero_stage == 3:
        from transformers.integrations.deepspeed import HfDeepSpeedConfig

        _KEEPALIVE.append(HfDeepSpeedConfig(ds_config))
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.model.trust_remote_code}
    if cfg.model.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=cfg.quant.quant_type,
            bnb_4bit_use_double_quant=cfg.quant.double_quant,
            bnb_4bit_compute_dtype=_dtype(compute_precision(cfg)),
            bnb_4bit_quant_storage=dtype,
        )
        if torch.cuda.is_available() and cfg.deepspeed.zero_stage != 3:
            # (ZeRO-3 + device_map is refused by transformers; the HfDeepSpeedConfig path places shards itself)
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    if cfg.model.method == "qlora" and cfg.deepspeed.zero_stage == 3:
        disable_cpu_weight_packing(model)
    model.config.use_cache = False
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    for p in model.parameters():  # LoRA weights train in the load dtype (DeepSpeed keeps fp32 masters)
        if p.requires_grad:
            p.data = p.data.to(dtype)
    return model


def adapter_config_dict(model, base_model: str) -> dict[str, Any]:
    """PEFT's adapter_config.json content, pointing at the model path users gave."""
    cfg = model.peft_config["default"]
    cfg.base_model_name_or_path = base_model
    data = cfg.to_dict()
    for k, v in list(data.items()):
        if isinstance(v, set):
            data[k] = sorted(v)
    if isinstance(data.get("target_modules"), list):  # short leaf names, as serving engines expect
        data["target_modules"] = sorted({t.rsplit(".", 1)[-1] for t in data["target_modules"]})
    return json.loads(json.dumps(data, default=str))
