"""How retrieved chunks are shown to the model: one layout shared by serving (RAG prompts) and training (RAFT
rows), so an adapter trained with context sees at serving time exactly the layout it learned on.
"""

from __future__ import annotations

from typing import Any, Literal

Placement = Literal["system", "user"]
DEFAULT_SYSTEM_PROMPT = "Answer using the context below. Cite sources by their [n] number."


def context_block(hits: list[dict[str, Any]]) -> str:
    """Numbered chunks, best first, each with its source path: `[n] (source) text`."""
    return "\n\n".join(f"[{i + 1}] ({h['source']}) {h['text']}" for i, h in enumerate(hits))


def with_context_chat(
    messages: list[dict[str, str]],
    hits: list[dict[str, Any]],
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    placement: Placement = "system",
) -> list[dict[str, str]]:
    """Put the instruction and the numbered context into the system message ("system", appended to the caller's
    own system message if any) or in front of the last user message ("user")."""
    if not hits:
        return messages
    context = f"{system_prompt}\n\nContext:\n{context_block(hits)}"
    if placement == "user":
        last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last is not None:
            question = messages[last]["content"]
            return [
                *messages[:last],
                {"role": "user", "content": f"{context}\n\nQuestion: {question}"},
                *messages[last + 1 :],
            ]
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{context}"}, *messages[1:]]
    return [{"role": "system", "content": context}, *messages]


def with_context_text(
    prompt: str, hits: list[dict[str, Any]], system_prompt: str = DEFAULT_SYSTEM_PROMPT
) -> str:
    if not hits:
        return prompt
    return f"{system_prompt}\n\nContext:\n{context_block(hits)}\n\n{prompt}"
