"""TrainConfig: the one validated description of a fine-tuning run (YAML + dotted overrides).

Everything a platform team tunes lives here, so `python -m training validate` can reject a bad run before a
single Ray worker starts, with every problem named by its field path.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from core.config import BaseConfig
from retrieval.config import check_collection_name
from retrieval.context import DEFAULT_SYSTEM_PROMPT

TINY = "tiny"  # special model path: build the project's tiny Llama on demand


class ModelSettings(BaseConfig):
    path: str = Field(
        description=f"local model folder or hub id; '{TINY}' builds the project's tiny Llama on demand; "
        "'smollm2-135m-instruct' imports the default pretrained model (SmolLM2-135M-Instruct) from its PyPI package"
    )
    method: Literal["lora", "qlora"] = Field("qlora", description="lora: bf16/fp32 base; qlora: 4-bit base")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="dtype the base is loaded and trained in; auto: bf16 where it is native (GPUs, AVX-512-bf16/AMX "
        "CPUs), else fp32 (bf16 is emulated and ~10x slower on AVX2-only CPUs); resolved on each worker",
    )
    gradient_checkpointing: bool = Field(True, description="recompute activations in backward to save memory")
    trust_remote_code: bool = Field(False, description="allow model code from the model folder (hub models)")


class LoraSettings(BaseConfig):
    r: int = Field(8, ge=1, le=512, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the LoRA input")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names to adapt (e.g. [q_proj, v_proj]) or 'all-linear'"
    )


class QuantSettings(BaseConfig):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="bitsandbytes 4-bit data type (QLoRA only)")
    double_quant: bool = Field(True, description="quantise the quantisation constants too (QLoRA only)")
    compute_dtype: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="dtype 4-bit matmuls compute in; auto: the resolved model.precision"
    )


class RaftSettings(BaseConfig):
    """RAFT-style rows: the adapter trains on the retrieved context it will be given at serving time."""

    enabled: bool = Field(
        False, description="build the RAFT rows before training (off: train on data.path as is)"
    )
    collection: str = Field(description="Milvus collection to retrieve from (the one serving retrieves from)")
    uri: str = Field(
        "data:milvus.db",
        description="Milvus Lite file (*.db) or http(s)://host:19530; 'data:x' is x in the data folder",
    )
    top_k: int = Field(
        4, ge=1, le=100, description="chunks in each context (match serving's retriever.top_k)"
    )
    no_answer_fraction: float = Field(
        0.2, ge=0.0, le=1.0, description="share of context rows whose gold source is removed from the context"
    )
    plain_fraction: float = Field(
        0.3, ge=0.0, le=1.0, description="share of rows kept without context and without a system message"
    )
    seed: int = Field(0, description="seed for choosing plain and no-answer rows")
    system_prompt: str = Field(
        DEFAULT_SYSTEM_PROMPT,
        description="instruction before the context (match serving's router.system_prompt)",
    )
    placement: Literal["system", "user"] = Field(
        "system", description="where the context goes (match serving's router.context_placement)"
    )

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, v: str) -> str:
        return check_collection_name(v)


class DataSettings(BaseConfig):
    path: str = Field(description="jsonl or parquet file, or a folder of .txt/.md files (format text)")
    format: Literal["messages", "alpaca", "text"] = Field("messages", description="row layout of the dataset")
    text_field: str = Field("text", description="column holding the text for format 'text' (jsonl/parquet)")
    max_seq_len: int = Field(
        512, ge=8, description="tokens per example; longer ones are truncated and counted"
    )
    packing: bool = Field(False, description="concatenate examples into full max_seq_len sequences")
    validation_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="share of rows held out for eval")
    max_bad_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="fail if more rows than this are malformed"
    )
    seed: int = Field(0, description="seed for the train/validation split and shuffling")
    rag_context: RaftSettings | None = Field(
        None, description="RAFT: put retrieved context into the chat rows before training (format messages)"
    )

    @model_validator(mode="after")
    def _rag_needs_messages(self) -> DataSettings:
        if self.rag_context is not None and self.rag_context.enabled and self.format != "messages":
            raise ValueError(f"rag_context needs format 'messages' (got {self.format!r})")
        return self


class OptimSettings(BaseConfig):
    lr: float = Field(2e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps, then cosine decay to 10%")
    max_steps: int = Field(100, ge=1, description="optimizer steps to train (data repeats as needed)")
    micro_batch_size: int = Field(1, ge=1, description="sequences per worker per forward pass")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping (0 disables)")


class DeepSpeedSettings(BaseConfig):
    zero_stage: Literal[0, 2, 3] = Field(
        3, description="ZeRO stage: 3 shards parameters, gradients and optimizer"
    )
    offload: Literal["none", "optimizer", "params"] = Field(
        "none", description="offload to CPU memory: optimizer state (ZeRO 2/3) or also parameters (ZeRO 3)"
    )
    param_persistence_threshold: int = Field(
        100_000,
        ge=0,
        description="ZeRO-3: parameters with fewer elements stay whole on every rank (LoRA matrices, norms); "
        "0 partitions everything (more gathers, less memory)",
    )


class ScalingSettings(BaseConfig):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one per GPU on GPU clusters)")
    use_gpu: bool = Field(False, description="one GPU per worker; runs the memory preflight first")
    cpus_per_worker: float = Field(1.0, gt=0, description="logical CPUs reserved per worker")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="how worker bundles are placed across nodes"
    )


class RunSettings(BaseConfig):
    name: str = Field(description="run name; re-running with the same name resumes from its last checkpoint")
    storage_path: str | None = Field(
        None, description="Ray Train storage (local/shared path or s3://); default data_dir()/runs"
    )
    checkpoint_every: int = Field(
        50, ge=1, description="steps between checkpoints (one is always written at the end)"
    )
    num_to_keep: int = Field(2, ge=1, description="checkpoints kept by Ray Train")
    max_failures: int = Field(1, ge=-1, description="worker-group restarts Ray Train may do (-1: unlimited)")
    eval_every: int = Field(50, ge=1, description="steps between validation passes (also at the end)")
    log_every: int = Field(1, ge=1, description="steps between progress lines")
    seed: int = Field(0, description="seed for LoRA init and dropout")


class OutputSettings(BaseConfig):
    adapter_name: str = Field(description="name the adapter is published under in the adapter store")
    store: str | None = Field(
        None, description="adapter store root (path or s3://); default data_dir()/adapters"
    )
    overwrite: bool = Field(
        True,
        description="publish a new version of an existing adapter name (false: refuse the name if it exists)",
    )
    keep_versions: int | None = Field(
        5, ge=1, description="versions of this adapter kept after publishing (the served one always); null: all"
    )


class TrackingSettings(BaseConfig):
    tensorboard: bool = Field(False, description="write TensorBoard event files into the run folder")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI (needs `pip install mlflow`)")
    experiment: str = Field("training", description="MLflow experiment name")


class PreflightSettings(BaseConfig):
    gpu_memory_gb: float | None = Field(
        None, gt=0, description="GPU memory per worker; default: detected on the driver"
    )
    force: bool = Field(False, description="launch even if the memory planner says it will not fit")


class TrainConfig(BaseConfig):
    """A fine-tuning run: model, adapter, data, optimisation, distribution and outputs."""

    model: ModelSettings = Field(description="base model and training method")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA adapter shape")
    quant: QuantSettings = Field(default_factory=QuantSettings, description="4-bit settings (method qlora)")
    data: DataSettings = Field(description="dataset and tokenisation")
    optim: OptimSettings = Field(default_factory=OptimSettings, description="optimiser and schedule")
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings, description="DeepSpeed ZeRO")
    scaling: ScalingSettings = Field(default_factory=ScalingSettings, description="Ray Train ScalingConfig")
    run: RunSettings = Field(description="Ray Train RunConfig: name, storage, checkpoints, failures")
    output: OutputSettings = Field(description="where the final adapter is published")
    tracking: TrackingSettings = Field(default_factory=TrackingSettings, description="metrics sinks")
    preflight: PreflightSettings = Field(
        default_factory=PreflightSettings, description="GPU memory preflight"
    )

    @model_validator(mode="after")
    def _cross_field(self) -> TrainConfig:
        problems = []
        ds = self.deepspeed
        if ds.offload == "params" and ds.zero_stage != 3:
            problems.append(f"deepspeed.offload: 'params' needs deepspeed.zero_stage 3 (got {ds.zero_stage})")
        if ds.offload == "optimizer" and ds.zero_stage == 0:
            problems.append("deepspeed.offload: 'optimizer' needs deepspeed.zero_stage 2 or 3 (got 0)")
        if (
            self.model.method == "qlora"
            and self.model.precision == "fp32"
            and self.quant.compute_dtype == "bf16"
        ):
            problems.append(
                "quant.compute_dtype: bf16 with model.precision fp32; use the same dtype for both"
            )
        if self.lora.alpha < 1:
            problems.append("lora.alpha must be >= 1")
        if self.data.packing and self.data.format == "text" and self.data.max_seq_len < 16:
            problems.append("data.max_seq_len: packing needs at least 16 tokens")
        if problems:
            raise ValueError("; ".join(problems))
        return self
