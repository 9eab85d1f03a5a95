"""OpenAI response bodies from the LLM deployment's items: choices (`n`, several prompts), logprobs, streaming.

The LLM deployment yields `{"choices": [{"index", "text", "tokens", "finish_reason", "logprobs"}],
"prompt_tokens"}` per engine step (deltas). `logprobs` there is a list of `[token, logprob, [[token, logprob],
...]]` per generated token; this module shapes it the way each API wants it (chat: `content` entries with
bytes; completions: parallel lists).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from serving.protocol import APIError

CLIENT_CLOSED = 499  # nginx's status for a client that left before the answer (metrics only)


def sse(obj: dict[str, Any] | str) -> bytes:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()


def format_logprobs(entries: list[list[Any]] | None, chat: bool, offset: int = 0) -> dict[str, Any] | None:
    """OpenAI's logprobs object for `entries` ([token, logprob, top]); `offset`: text length before them."""
    if entries is None:
        return None
    if chat:
        return {
            "content": [
                {
                    "token": tok,
                    "logprob": lp,
                    "bytes": list(tok.encode()),
                    "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in top],
                }
                for tok, lp, top in entries
            ]
        }
    offsets, pos = [], offset
    for tok, _, _ in entries:
        offsets.append(pos)
        pos += len(tok)
    return {
        "tokens": [tok for tok, _, _ in entries],
        "token_logprobs": [lp for _, lp, _ in entries],
        "top_logprobs": [dict(top) for _, _, top in entries],
        "text_offset": offsets,
    }


class Choices:
    """Accumulates the items of one or more generations (prompt p's choice i has index p * n + i)."""

    def __init__(self) -> None:
        self.text: dict[int, str] = {}
        self.finish: dict[int, str | None] = {}
        self.logprobs: dict[int, list[list[Any]] | None] = {}
        self.tokens = 0
        self.prompt_tokens = 0

    def add(self, item: dict[str, Any], base: int = 0, first: bool = False) -> list[dict[str, Any]]:
        """Fold in one item; returns its choices re-indexed (for streaming)."""
        if first:
            self.prompt_tokens += item.get("prompt_tokens", 0)
        out = []
        for c in item["choices"]:
            i = base + c["index"]
            self.text[i] = self.text.get(i, "") + c["text"]
            self.finish[i] = c["finish_reason"] or self.finish.get(i)
            if c.get("logprobs") is not None:
                self.logprobs[i] = (self.logprobs.get(i) or []) + c["logprobs"]
            else:
                self.logprobs.setdefault(i, None)
            self.tokens += c["tokens"]
            out.append({**c, "index": i})
        return out

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.tokens,
            "total_tokens": self.prompt_tokens + self.tokens,
        }

    def body(self, chat: bool) -> list[dict[str, Any]]:
        out = []
        for i in sorted(self.text):
            c: dict[str, Any] = {
                "index": i,
                "finish_reason": self.finish.get(i) or "stop",
                "logprobs": format_logprobs(self.logprobs.get(i), chat),
            }
            c.update(
                {"message": {"role": "assistant", "content": self.text[i]}}
                if chat
                else {"text": self.text[i]}
            )
            out.append(c)
        return out


async def stream_events(
    gen: Any,
    first: dict[str, Any],
    chat: bool,
    meta: dict[str, Any],
    extra: dict[str, Any],
    include_usage: bool,
    finish: Callable[[dict[str, Any]], None],
    release: Callable[[int], None],
) -> AsyncIterator[bytes]:
    """Server-sent events for one streamed generation (one prompt, `n` choices); the last content chunk carries
    `extra` (sources, rag); a failure after the headers is reported in-band, as vLLM does."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    acc = Choices()
    offsets: dict[int, int] = {}
    opened: set[int] = set()

    def chunk(c: dict[str, Any], fr: str | None) -> dict[str, Any]:
        i = c["index"]
        lp = format_logprobs(c.get("logprobs"), chat, offsets.get(i, 0))
        if chat:
            delta: dict[str, Any] = {} if i in opened else {"role": "assistant"}
            if c.get("text"):
                delta["content"] = c["text"]
            body = {"index": i, "delta": delta, "finish_reason": fr, "logprobs": lp}
        else:
            body = {"index": i, "text": c.get("text") or "", "finish_reason": fr, "logprobs": lp}
        opened.add(i)
        offsets[i] = offsets.get(i, 0) + len(c.get("text") or "")
        return {**meta, "object": obj, "choices": [body]}

    status = CLIENT_CLOSED  # until [DONE] is sent: a client that leaves mid-stream is counted as 499
    try:
        for c in acc.add(first, first=True):
            yield sse(chunk(c, None))
        try:
            async for item in gen:
                for c in acc.add(item):
                    if c["text"] or c.get("logprobs"):
                        yield sse(chunk(c, None))
        except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band
            status = 503
            failure = APIError(
                503, f"model replica failed mid-stream ({type(exc).__name__})", type_="service_unavailable"
            )
            yield sse(failure.body())
            yield sse("[DONE]")
            return
        indices = sorted(acc.text)
        for n, i in enumerate(indices):
            last = {**chunk({"index": i, "text": ""}, acc.finish.get(i) or "stop")}
            yield sse({**last, **extra} if n == len(indices) - 1 else last)
        usage = acc.usage()
        if include_usage:
            yield sse({**meta, "object": obj, "choices": [], "usage": usage})
        yield sse("[DONE]")
        status = 200
        finish(usage)
    finally:
        release(status)
