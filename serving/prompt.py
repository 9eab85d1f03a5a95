"""Prompt building within the model's context budget, with the model's own tokenizer and chat template.

Retrieved chunks arrive best first; when they do not all fit beside the request and its `max_tokens`, the
lowest-ranked ones are dropped, so the sources returned are exactly the ones the model saw.
"""

from __future__ import annotations

from typing import Any

from retrieval.context import Placement, with_context_chat, with_context_text
from serving.protocol import APIError


class PromptBuilder:
    def __init__(
        self, tokenizer: Any, max_model_len: int, system_prompt: str, placement: Placement = "system"
    ) -> None:
        self.tok = tokenizer
        self.max_model_len = max_model_len
        self.system_prompt = system_prompt
        self.placement = placement

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        ids = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return list(ids)

    def text_ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=True)["input_ids"])

    def with_context_chat(
        self, messages: list[dict[str, str]], hits: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        return with_context_chat(messages, hits, self.system_prompt, self.placement)

    def with_context_text(self, prompt: str, hits: list[dict[str, Any]]) -> str:
        return with_context_text(prompt, hits, self.system_prompt)

    def build(
        self,
        max_tokens: int,
        hits: list[dict[str, Any]],
        messages: list[dict[str, str]] | None = None,
        prompt: str | None = None,
    ) -> tuple[list[int], list[dict[str, Any]]]:
        """Token ids that fit `max_model_len - max_tokens`, and the hits used; APIError 400 with the numbers if not."""
        budget = self.max_model_len - max_tokens
        if budget <= 0:
            raise APIError(
                400,
                f"max_tokens ({max_tokens}) leaves no room for a prompt in the model's context of {self.max_model_len} tokens",
                param="max_tokens",
                code="context_length_exceeded",
            )

        def encode(used: list[dict[str, Any]]) -> list[int]:
            if messages is not None:
                return self.chat_ids(self.with_context_chat(messages, used))
            return self.text_ids(self.with_context_text(prompt or "", used))

        bare = encode([])
        if len(bare) > budget:
            raise APIError(
                400,
                f"this model's maximum context length is {self.max_model_len} tokens; the prompt has {len(bare)} tokens "
                f"and max_tokens asks for {max_tokens} ({len(bare) + max_tokens} in total). Shorten the prompt or lower max_tokens.",
                param="messages" if messages is not None else "prompt",
                code="context_length_exceeded",
            )
        lo, hi = (
            0,
            len(hits),
        )  # largest prefix of the ranked hits that fits (token counts grow with the prefix)
        best = bare
        while lo < hi:
            mid = (lo + hi + 1) // 2
            ids = encode(hits[:mid])
            if len(ids) <= budget:
                lo, best = mid, ids
            else:
                hi = mid - 1
        return best, hits[:lo]
