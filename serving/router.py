"""The OpenAI-compatible ingress: resolves `model` (base, adapter version or route; `serving.adapters`), retrieves
context, builds the prompt within the context budget, and streams from the LLM deployment through a multiplexed
Serve handle keyed by `name@version`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.adapter_store import AdapterStore
from core.fingerprint import model_fingerprint
from serving.adapters import AdapterCatalog
from serving.admission import Admission
from serving.auth import KeyRing, Principal, check_exposure, serve_bound_host
from serving.config import RouteConfig, ServeConfig, resolve_path
from serving.embeddings import embeddings_response
from serving.metrics import ServingMetrics
from serving.models import model_cards
from serving.prompt import PromptBuilder
from serving.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    IngestRequest,
    parse_body,
)
from serving.rag import rag_plan, retrieve
from serving.responses import CLIENT_CLOSED, Choices, stream_events

app = FastAPI(title="domain-expert", docs_url=None, redoc_url=None)


@app.exception_handler(APIError)
async def _api_error(_: Request, exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    err = APIError(
        exc.status_code, f"{exc.detail}: see GET /v1/models, POST /v1/chat/completions, POST /v1/completions"
    )
    return JSONResponse(err.body(), status_code=exc.status_code)


@app.exception_handler(Exception)
async def _internal(_: Request, exc: Exception) -> JSONResponse:
    err = APIError(
        500, f"internal error ({type(exc).__name__}); the server log has details", type_="server_error"
    )
    return JSONResponse(err.body(), status_code=500)


logger = logging.getLogger("ray.serve")  # Serve's logger: lines land in the replica's log with its context


def _cancel(gens: list[Any]) -> None:
    for gen in gens:
        if hasattr(gen, "cancel"):
            gen.cancel()


@serve.deployment(name="Router")
@serve.ingress(app)
class Router:
    def __init__(self, cfg: dict[str, Any], llm: Any, retriever: Any | None) -> None:
        from transformers import AutoTokenizer

        self.cfg = ServeConfig.model_validate(cfg)
        self.base = self.cfg.model.served_name()
        # Once: the served base never changes under a running replica, and fingerprinting reads its files.
        self.base_fp = model_fingerprint(self.cfg.model.resolved_path())
        tokenizer = AutoTokenizer.from_pretrained(self.cfg.model.resolved_path())
        self.prompts = PromptBuilder(
            tokenizer,
            self.cfg.model.max_model_len,
            self.cfg.router.system_prompt,
            self.cfg.router.context_placement,
        )
        self.llm, self.retriever = llm, retriever
        ac = self.cfg.adapters
        self.store = AdapterStore(resolve_path(ac.store))
        self.catalog = AdapterCatalog(self.store, self.base, self.base_fp, ac.refresh_s, ac.pointer_ttl_s)
        rc = self.cfg.router
        self.keys = KeyRing(rc.api_keys, rc.api_keys_env)
        where = f"router.api_keys or ${rc.api_keys_env}" if rc.api_keys_env else "router.api_keys"
        check_exposure(self.keys, serve_bound_host(rc.host), rc.allow_unauthenticated, where)
        self.admission = Admission(rc.max_in_flight, rc.max_queued, rc.queue_timeout_s)
        self.metrics = ServingMetrics()
        self.embedder_info: dict[str, Any] | None = None

    # -- helpers -------------------------------------------------------------------------------------
    def _auth(self, request: Request, scope: str) -> Principal:
        principal = self.keys.authenticate(request.headers.get("authorization", ""))
        principal.require(scope)
        return principal

    async def _resolve(self, model: str) -> tuple[str | None, str | None, RouteConfig | None]:
        """model -> (adapter as name@version, route name, route)."""
        if model == self.base:
            return None, None, None
        route = self.cfg.routes.get(model)
        if route is not None:
            if not route.adapter:
                return None, model, route
            info = await self.catalog.lookup(route.adapter, via=f"route {model!r}: ")
            if info is None:
                raise APIError(
                    404,
                    f"route {model!r} uses adapter {route.adapter!r}, which is not in the adapter store yet",
                    param="model",
                    code="model_not_found",
                )
            return info.ref, model, route
        info = await self.catalog.lookup(model)
        if info is None:
            names = ", ".join([self.base, *self.cfg.routes, *(a.name for a in self.catalog.servable())])
            raise APIError(
                404, f"model {model!r} not found; available: {names}", param="model", code="model_not_found"
            )
        return info.ref, None, None

    # -- endpoints -----------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz(self) -> JSONResponse:
        async def ping(handle: Any) -> str:
            try:
                return await asyncio.wait_for(handle.ping.remote(), timeout=5)
            except Exception as exc:  # noqa: BLE001
                return f"down ({type(exc).__name__})"

        llm = await ping(self.llm)
        retr = await ping(self.retriever) if self.retriever is not None else "disabled"
        status = "ok" if llm == "ok" and retr in ("ok", "disabled") else "degraded" if llm == "ok" else "down"
        body = {
            "status": status,
            "llm": llm,
            "retriever": retr,
            "in_flight": self.admission.in_flight,  # this replica's admission state: 0/0 when idle (no leaked slot)
            "queued": self.admission.queued,
        }
        return JSONResponse(body, status_code=200 if llm == "ok" else 503)

    @app.get("/v1/models")
    async def models(self, request: Request) -> dict[str, Any]:
        principal = self._auth(request, "read")
        await self.catalog.refresh()
        embedder = await self._embedder() if self.retriever is not None else None
        data = model_cards(self.cfg, self.base, self.catalog.servable(), embedder)
        return {"object": "list", "data": [m for m in data if principal.may_call(m["id"])]}

    @app.post("/v1/documents")
    async def documents(self, request: Request) -> dict[str, Any]:
        principal = self._auth(request, "ingest")
        limit = self.cfg.router.max_document_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:  # refused before the body is read
            raise APIError(413, f"body of {declared} bytes is over router.max_document_bytes ({limit})")
        body = await request.body()
        if len(body) > limit:
            raise APIError(413, f"body of {len(body)} bytes is over router.max_document_bytes ({limit})")
        req: IngestRequest = parse_body(body, IngestRequest)
        principal.check_collection(req.collection or self.cfg.retriever.collection)
        if self.retriever is None:
            raise APIError(
                400, "this server runs without a retriever; documents cannot be added", param="collection"
            )
        docs = [d.model_dump() for d in req.documents]
        result = await self.retriever.ingest.remote(docs, req.collection)
        if "error" in result:
            raise APIError(result["status"], result["error"], param="collection")
        return result

    @app.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> dict[str, Any]:
        principal = self._auth(request, "read")
        req: EmbeddingRequest = parse_body(await request.body(), EmbeddingRequest)
        principal.check_model(req.model)
        if self.retriever is None:
            raise APIError(400, "this server runs without a retriever, so it has no embedder", param="model")
        return await embeddings_response(req, self.retriever, await self._embedder())

    async def _embedder(self) -> dict[str, Any]:
        if self.embedder_info is None:  # asked once: the embedder never changes under a running app
            self.embedder_info = await self.retriever.embedder_info.remote()
        return self.embedder_info

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Any:
        return await self._generate(request, chat=True)

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Any:
        return await self._generate(request, chat=False)

    # -- generation ----------------------------------------------------------------------------------
    async def _generate(self, request: Request, chat: bool) -> Any:
        principal = self._auth(request, "read")
        await self.admission.acquire()
        handed_off = False  # a streaming body releases the slot itself when it ends
        try:
            response = await self._generate_inner(request, chat, principal)
            handed_off = isinstance(response, StreamingResponse)
            return response
        finally:
            if not handed_off:
                self.admission.release()

    async def _generate_inner(self, request: Request, chat: bool, principal: Principal) -> Any:
        started = time.perf_counter()
        req = parse_body(await request.body(), ChatRequest if chat else CompletionRequest)
        principal.check_model(req.model, self.cfg.routes)
        adapter, route_name, route = await self._resolve(req.model)
        # metrics count by adapter name, not version: a label per version would grow without bound
        tags = self.metrics.tags(req.model, adapter and adapter.rpartition("@")[0], route_name)
        try:
            sampling = req.sampling(self.cfg.router.default_max_tokens)
            plan = rag_plan(req.rag, route, self.cfg.retriever, self.retriever is not None)
            if plan is not None:
                pinned = (route.collection or self.cfg.retriever.collection) if route else None
                principal.check_collection(plan["collection"], pinned_by_route=pinned)
            messages = (
                [m.model_dump(exclude_none=True, exclude={"name"}) for m in req.messages] if chat else None
            )
            prompts: list[str | None] = [None] if chat else list(req.prompts())
            if len(prompts) > 1 and (plan is not None or req.stream):
                raise APIError(
                    400,
                    "several prompts in one request are answered without RAG and without streaming; "
                    "send one request per prompt for those",
                    param="prompt",
                )
            hits, degraded, retrieval_s = [], False, 0.0
            if plan is not None:
                query = (
                    next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
                    if chat
                    else prompts[0]
                )
                hits, degraded, retrieval_s = await retrieve(
                    self.retriever, query, plan, route_name, self.metrics
                )
            built = [
                await asyncio.to_thread(self.prompts.build, sampling["max_tokens"], hits, messages, prompt)
                for prompt in prompts
            ]
            used = built[0][1]
            handle = self.llm.options(multiplexed_model_id=adapter or "", stream=True)
            gens = [
                handle.generate.remote({"prompt_token_ids": ids, "sampling": sampling, "stream": req.stream})
                for ids, _ in built
            ]  # all submitted at once: the engine batches them
            try:
                firsts = await asyncio.gather(
                    *(self._first(g, len(b[0])) for g, b in zip(gens, built, strict=True))
                )
            except BaseException:
                _cancel(gens)  # the others must not keep generating for nobody
                raise
        except APIError as exc:
            self.metrics.done(tags, exc.status, 0, None, {})
            raise
        ttft = time.perf_counter() - started
        extra: dict[str, Any] = {}
        if plan is not None:
            extra["sources"] = [
                {"source": h["source"], "chunk": h["chunk"], "score": h["score"], "title": h.get("title")}
                for h in used
            ]
            extra["rag"] = {
                "collection": plan["collection"],
                "top_k": plan["top_k"],
                "retrieved": len(hits),
                "used": len(used),
                "degraded": degraded,
                "retrieval_ms": round(1000 * retrieval_s, 1),  # as this router saw it: embed + search + hops
            }
        meta = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": req.model,
        }

        def finish(usage: dict[str, Any], status: int = 200) -> None:
            self.metrics.done(tags, status, time.perf_counter() - started, ttft, usage)

        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            released = False
            gen = gens[0]

            def release(status: int = 200) -> None:
                """Free the slot and the engine request once, whether the body ran to the end, failed, or
                never started (a client gone before the first byte: then only the background task runs)."""
                nonlocal released
                if released:
                    return
                released = True
                self.admission.release()
                if status != 200:
                    finish({}, status)
                if hasattr(gen, "cancel"):
                    gen.cancel()

            body = stream_events(gen, firsts[0], chat, meta, extra, include_usage, finish, release)
            return StreamingResponse(
                body, media_type="text/event-stream", background=BackgroundTask(release, CLIENT_CLOSED)
            )
        acc = Choices()

        async def drain(p: int, gen: Any, first: dict[str, Any]) -> None:
            acc.add(first, base=p * req.n, first=True)
            async for item in gen:
                acc.add(item, base=p * req.n)

        try:
            await asyncio.gather(*(drain(p, g, f) for p, (g, f) in enumerate(zip(gens, firsts, strict=True))))
        except BaseException as exc:
            _cancel(gens)
            if not isinstance(exc, Exception):
                raise  # cancelled: the client left
            finish({}, 503)
            raise APIError(
                503,
                f"model replica failed mid-request ({type(exc).__name__}); retry",
                type_="service_unavailable",
            ) from None
        usage = acc.usage()
        finish(usage)
        obj = "chat.completion" if chat else "text_completion"
        return {**meta, "object": obj, "choices": acc.body(chat), "usage": usage, **extra}

    @staticmethod
    async def _first(gen: Any, prompt_tokens: int) -> dict[str, Any]:
        """The generation's first item (an error item becomes its APIError; a dead replica a 503)."""
        try:
            first = await gen.__anext__()
        except StopAsyncIteration:
            empty = {"index": 0, "text": "", "tokens": 0, "finish_reason": "stop", "logprobs": None}
            return {"choices": [empty], "prompt_tokens": prompt_tokens}
        except Exception as exc:  # noqa: BLE001 - the LLM replica died or is restarting
            raise APIError(
                503,
                f"model replica unavailable ({type(exc).__name__}); retry shortly",
                type_="service_unavailable",
            ) from None
        if "error" in first:
            raise APIError(first["status"], first["error"], param=first.get("param"), code=first.get("code"))
        return first
