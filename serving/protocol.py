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


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
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

    def sampling(self, default_max_tokens: int) -> dict[str, Any]:
        """Keyword arguments for vllm.SamplingParams (unset fields keep vLLM's defaults)."""
        out = {k: getattr(self, k) for k in SAMPLING_FIELDS if getattr(self, k) is not None}
        out["max_tokens"] = self.max_tokens or default_max_tokens
        return out


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def sampling(self, default_max_tokens: int) -> dict[str, Any]:
        out = super().sampling(default_max_tokens)
        if self.max_completion_tokens and not self.max_tokens:
            out["max_tokens"] = self.max_completion_tokens
        return out


class CompletionRequest(_Common):
    prompt: str | list[str]
    echo: Literal[False] = False

    def prompt_text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise APIError(
                    400,
                    "this server accepts one prompt per request (a string or a list of one)",
                    param="prompt",
                )
            return self.prompt[0]
        return self.prompt


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
