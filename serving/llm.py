"""The LLM deployment: one vLLM AsyncLLM per replica, LoRA adapters loaded from the adapter store by name.

Ray Serve LLM loads adapters only from object storage URIs; this deployment fills that gap (local and shared
folders as well as s3:// / gs://) and keeps Serve model multiplexing, so requests for one adapter prefer replicas
that already hold it, and an LRU bound evicts adapters from both Serve's cache and vLLM.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from core.adapter_store import AdapterBaseMismatch, AdapterStore, check_compatible
from core.errors import UserError
from core.fingerprint import model_fingerprint
from serving.config import ModelConfig
from serving.engine_memory import check_cpu_engine_memory, kv_cache_bytes, on_gpu


class LoadedAdapter:
    """An adapter registered in this replica's engine; Serve awaits `__del__` when its LRU evicts it."""

    def __init__(self, engine: Any, lora_request: Any) -> None:
        self.engine = engine
        self.lora_request = lora_request

    async def __del__(self) -> None:  # called (and awaited) by Serve's multiplexing LRU
        if self.engine.errored:  # replica shutdown: Serve unloads adapters after the engine has stopped
            return
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            await self.engine.remove_lora(self.lora_request.lora_int_id)
        except EngineDeadError:  # stopped between the check and the call: nothing left to unload from
            pass


def engine_dtype(dtype: str, gpu: bool) -> str:
    """'auto' on a CPU: bfloat16 only where the CPU computes it natively."""
    if dtype != "auto" or gpu:
        return dtype
    from core.hardware import cpu_has_native_bf16

    return "bfloat16" if cpu_has_native_bf16() else "float32"


def engine_args(cfg: ModelConfig, gpu: bool | None = None) -> Any:
    """vLLM engine arguments; on CPU the KV cache is given in bytes and checked against the node's free memory."""
    from vllm import AsyncEngineArgs

    gpu = on_gpu() if gpu is None else gpu
    kv_bytes = kv_cache_bytes(cfg.kv_cache_gib, gpu)
    if not gpu and kv_bytes is not None:
        check_cpu_engine_memory(kv_bytes, cfg.resolved_path())
    kwargs: dict[str, Any] = {
        "model": cfg.resolved_path(),
        "served_model_name": cfg.served_name(),
        "enable_lora": True,
        "max_lora_rank": cfg.max_lora_rank,
        "max_loras": cfg.max_loras,
        "max_cpu_loras": cfg.max_loaded_adapters,
        "dtype": engine_dtype(cfg.dtype, gpu),
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "max_model_len": cfg.max_model_len,
        "enforce_eager": cfg.enforce_eager,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "disable_log_stats": True,
    }
    if cfg.compact_json:
        from vllm.config import StructuredOutputsConfig

        # engine-wide in vLLM 0.32 (a per-request flag is ignored), and only with a named backend
        kwargs["structured_outputs_config"] = StructuredOutputsConfig(
            backend="xgrammar", disable_any_whitespace=True
        )
    if kv_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = kv_bytes
    kwargs.update(cfg.engine_kwargs)
    return AsyncEngineArgs(**kwargs)


def sampling_params(sampling: dict[str, Any], kind: Any) -> Any:
    """vllm.SamplingParams from the router's keywords (structured outputs arrive as a plain dict)."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    kwargs = dict(sampling)
    if isinstance(kwargs.get("structured_outputs"), dict):
        kwargs["structured_outputs"] = StructuredOutputsParams(**kwargs["structured_outputs"])
    return SamplingParams(**kwargs, output_kind=kind)


def engine_choice(choice: Any, top: int | None) -> dict[str, Any]:
    """One engine output (a delta) as a plain dict; logprobs as [token, logprob, [[token, logprob], ...]]."""
    logprobs = None
    if top is not None and choice.logprobs is not None:
        logprobs = []
        for token_id, position in zip(choice.token_ids, choice.logprobs, strict=False):
            chosen = position.get(token_id)
            ranked = sorted(position.values(), key=lambda lp: lp.rank or 0)[:top]
            logprobs.append(
                [
                    chosen.decoded_token if chosen else "",
                    chosen.logprob if chosen else None,  # JSON has no -inf
                    [[lp.decoded_token or "", lp.logprob] for lp in ranked],
                ]
            )
    return {
        "index": choice.index,
        "text": choice.text,
        "tokens": len(choice.token_ids),
        "finish_reason": choice.finish_reason,
        "logprobs": logprobs,
    }


def merge_items(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Two consecutive delta items as one (text and token counts add up, logprobs concatenate)."""
    merged = {c["index"]: dict(c) for c in old["choices"]}
    for c in new["choices"]:
        prev = merged.get(c["index"])
        if prev is None:
            merged[c["index"]] = dict(c)
            continue
        prev["text"] += c["text"]
        prev["tokens"] += c["tokens"]
        prev["finish_reason"] = c["finish_reason"] or prev["finish_reason"]
        if c["logprobs"] is not None:
            prev["logprobs"] = (prev["logprobs"] or []) + c["logprobs"]
    return {"choices": [merged[i] for i in sorted(merged)], "prompt_tokens": new["prompt_tokens"]}


def make_llm_deployment(max_loaded_adapters: int) -> Any:
    """The deployment class; built in a function because the multiplexing LRU size is a decorator argument."""

    @serve.deployment(name="LLMServer", health_check_period_s=10, health_check_timeout_s=60)
    class LLMServer:
        def __init__(self, model_cfg: dict[str, Any], store_root: str) -> None:
            os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
            self.cfg = ModelConfig.model_validate(model_cfg)
            from serving import lora_cpu_ops  # torch: imported on the replica only

            # before vLLM loads its plugins, here and in the engine processes it starts
            lora_cpu_ops.configure(self.cfg.lora_cpu_ops, cpu=not on_gpu())
            from vllm.v1.engine.async_llm import AsyncLLM

            self.store = AdapterStore(store_root)
            self.base_fp = model_fingerprint(self.cfg.resolved_path())
            from vllm.usage.usage_lib import UsageContext

            # The server's batch defaults, not the embedded engine's: on a GPU `vllm serve` schedules up to 1024
            # sequences and 8-16k batched tokens where ENGINE_CONTEXT falls back to 128 and 2048 (parity, issue 11).
            self.engine = AsyncLLM.from_engine_args(
                engine_args(self.cfg), usage_context=UsageContext.OPENAI_API_SERVER
            )
            self._ids = itertools.count(1)
            self.batch_s = self.cfg.stream_batch_ms / 1000

        @serve.multiplexed(max_num_models_per_replica=max_loaded_adapters)
        async def get_adapter(self, ref: str) -> LoadedAdapter:
            """Load one adapter version (`name@N`: immutable, so Serve's cache keyed by it is never stale)."""
            from vllm.lora.request import LoRARequest

            # Checked here too, not only in the router: any caller of this deployment gets the same guarantee.
            info = await asyncio.to_thread(self.store.get, ref)  # UserError if not in the store
            check_compatible(info, self.base_fp, self.cfg.served_name())
            path = await asyncio.to_thread(self.store.local_path, info.ref)
            request = LoRARequest(info.ref, next(self._ids), str(path))
            await self.engine.add_lora(request)
            return LoadedAdapter(self.engine, request)

        async def generate(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
            """Stream deltas: {"text", "tokens", "finish_reason", "prompt_tokens"}; a first {"error", "status",
            "param", "code"?} on bad input."""
            from vllm.exceptions import VLLMClientError
            from vllm.sampling_params import RequestOutputKind

            name = serve.get_multiplexed_model_id()
            lora = None
            try:
                if name:
                    lora = (await self.get_adapter(name)).lora_request
                kind = (
                    RequestOutputKind.DELTA if payload.get("stream", True) else RequestOutputKind.FINAL_ONLY
                )
                params = sampling_params(payload["sampling"], kind)
            except AdapterBaseMismatch as exc:
                yield {"error": str(exc), "status": 400, "param": "model", "code": "adapter_base_mismatch"}
                return
            except UserError as exc:
                yield {"error": str(exc), "status": 404, "param": "model"}
                return
            except (
                ValueError,
                TypeError,
                VLLMClientError,
            ) as exc:  # vLLM's checks (sampling values, adapter rank)
                yield {"error": str(exc), "status": 400, "param": None}
                return
            request_id = uuid.uuid4().hex
            prompt = {"prompt_token_ids": payload["prompt_token_ids"]}
            top = payload["sampling"].get("logprobs")
            started = False
            pending: dict[str, Any] | None = None
            last = 0.0
            try:
                async for out in self.engine.generate(prompt, params, request_id, lora_request=lora):
                    item = {
                        "choices": [engine_choice(c, top) for c in out.outputs],
                        "prompt_tokens": len(out.prompt_token_ids or ()),
                    }
                    if pending is not None:  # coalesce deltas: one Ray object per interval, not per token
                        item = merge_items(pending, item)
                    now = time.monotonic()
                    done = all(c["finish_reason"] for c in item["choices"])
                    if not started or done or now - last >= self.batch_s:
                        started, pending, last = True, None, now
                        yield item
                    else:
                        pending = item
                if pending is not None:
                    yield pending
            except (ValueError, TypeError, VLLMClientError) as exc:  # rejected by vLLM's input checks
                if started:
                    raise
                yield {"error": str(exc), "status": 400, "param": None}

        async def check_health(self) -> None:
            await self.engine.check_health()

        async def ping(self) -> str:
            return "ok"

        def __del__(self) -> None:
            engine = getattr(self, "engine", None)
            if engine is not None:
                engine.shutdown()

    return LLMServer
