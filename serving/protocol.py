"""OpenAI-compatible request models, vLLM sampling parameters, and OpenAI-style error bodies.

Requests are parsed by hand (not by FastAPI) so every failure, malformed JSON included, answers with the
`{"error": {...}}` body OpenAI clients understand instead of FastAPI's default 422 shape.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retrieval.config import COLLECTION_RE

# vLLM SamplingParams fields a request may set, exactly as `vllm serve` accepts them.
SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "min_tokens",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "skip_special_tokens",
    "include_stop_str_in_output",
    "bad_words",
    "allowed_token_ids",
    "logit_bias",
)


class APIError(Exception):
    """An error answered to the client as OpenAI-style JSON with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class RagOptions(BaseModel):
    """Per-request retrieval: `"rag": {"collection": ..., "top_k": ..., "filter": ...}`."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    collection: str | None = Field(default=None, pattern=COLLECTION_RE.pattern)
    top_k: int | None = Field(default=None, ge=1, le=100)
    filter: str | dict[str, Any] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """`response_format`: free text, any JSON object, or JSON following a schema (vLLM structured outputs)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def structured(self) -> dict[str, Any]:
        """vLLM StructuredOutputsParams keywords (whitespace is an engine setting: model.compact_json)."""
        if self.type == "json_object":
            return {"json_object": True}
        if self.json_schema is None:
            raise APIError(
                400, "response_format.json_schema is required with type json_schema", param="response_format"
            )
        return {"json": self.json_schema.schema_}


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=16, description="choices per prompt")
    user: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = None
    min_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool | None = None
    min_tokens: int | None = Field(default=None, ge=0)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0)
    skip_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None
    bad_words: list[str] | None = None
    allowed_token_ids: list[int] | None = None
    logit_bias: dict[int, float] | None = None
    rag: RagOptions | bool | None = None
    response_format: ResponseFormat | None = None

    def sampling(self, default_max_tokens: int) -> dict[str, Any]:
        """Keyword arguments for vllm.SamplingParams (unset fields keep vLLM's defaults)."""
        out = {k: getattr(self, k) for k in SAMPLING_FIELDS if getattr(self, k) is not None}
        out["max_tokens"] = self.max_tokens or default_max_tokens
        if self.n > 1:
            out["n"] = self.n
        if self.response_format is not None and self.response_format.type != "text":
            out["structured_outputs"] = self.response_format.structured()
        return out


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def sampling(self, default_max_tokens: int) -> dict[str, Any]:
        out = super().sampling(default_max_tokens)
        if self.max_completion_tokens and not self.max_tokens:
            out["max_tokens"] = self.max_completion_tokens
        if self.top_logprobs is not None and not self.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        if self.logprobs:
            out["logprobs"] = self.top_logprobs or 0
        return out


class CompletionRequest(_Common):
    prompt: str | list[str]
    echo: Literal[False] = False
    logprobs: int | None = Field(default=None, ge=0, le=20)

    def sampling(self, default_max_tokens: int) -> dict[str, Any]:
        out = super().sampling(default_max_tokens)
        if self.logprobs is not None:
            out["logprobs"] = self.logprobs
        return out

    def prompts(self) -> list[str]:
        """1 to 16 prompts; their choices are numbered prompt by prompt (index = prompt * n + choice)."""
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if not 1 <= len(prompts) <= 16:
            raise APIError(400, "prompt: give 1 to 16 prompts", param="prompt")
        return prompts


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=1024)
    text: str = Field(min_length=1)
    title: str | None = None


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    collection: str | None = Field(default=None, pattern=COLLECTION_RE.pattern)
    documents: list[Document] = Field(min_length=1, max_length=10_000)


class EmbeddingRequest(BaseModel):
    """`POST /v1/embeddings` with the retriever's embedder (the model documents are searched with)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts or len(texts) > 2048:
            raise APIError(400, "input: give 1 to 2048 strings", param="input")
        if any(not t.strip() for t in texts):
            raise APIError(400, "input: empty strings cannot be embedded", param="input")
        return texts


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """JSON bytes -> a validated request, or APIError 400 naming the first bad parameter."""
    try:
        data = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        first_param = None
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            first_param = first_param or loc
            msg = (
                "unknown parameter (not an OpenAI or vLLM sampling parameter)"
                if err["type"] == "extra_forbidden"
                else err["msg"]
            )
            problems.append(f"{loc}: {msg}")
        raise APIError(
            400, "invalid request: " + "; ".join(problems), param=first_param, code="invalid_parameter"
        ) from None
