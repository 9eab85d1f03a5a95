"""OpenAI/vLLM parameters users send, each against the real engine through the router: `n`, a list of prompts,
`logprobs`/`top_logprobs` (chat and completions, streamed too), `seed`, `stop`, and the 400s for what this
router does not do (several prompts with streaming or RAG)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

TOKENS = {"max_tokens": 6, "extra_body": {"ignore_eos": True}}


def test_n_choices_completions_and_usage(serving_app) -> None:
    out = serving_app.client().completions.create(
        model="tiny-llama", prompt="The pump", n=3, temperature=1.0, seed=7, **TOKENS
    )
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert out.usage.completion_tokens == 3 * 6 and all(c.finish_reason == "length" for c in out.choices)
    assert len({c.text for c in out.choices}) > 1  # sampled, not copies of one


def test_n_choices_stream_chat(serving_app) -> None:
    stream = serving_app.client().chat.completions.create(
        model="support-v3",
        messages=[{"role": "user", "content": "How is the pump flushed?"}],
        n=2,
        temperature=1.0,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
        **TOKENS,
    )
    text: dict[int, str] = {0: "", 1: ""}
    finished, usage = {}, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text[c.index] += c.delta.content or ""
            if c.finish_reason:
                finished[c.index] = c.finish_reason
    assert finished == {0: "length", 1: "length"} and all(text.values())
    assert usage is not None and usage.completion_tokens == 12


def test_a_list_of_prompts_is_answered_prompt_by_prompt(serving_app) -> None:
    client = serving_app.client()
    prompts = ["The pump", "Valve V3"]
    out = client.completions.create(model="tiny-llama", prompt=prompts, temperature=0, **TOKENS)
    alone = [
        client.completions.create(model="tiny-llama", prompt=p, temperature=0, **TOKENS).choices[0].text
        for p in prompts
    ]
    assert [c.index for c in out.choices] == [0, 1] and [c.text for c in out.choices] == alone
    sampled = client.completions.create(
        model="tiny-llama", prompt=prompts, n=2, temperature=1.0, seed=5, **TOKENS
    )
    assert [c.index for c in sampled.choices] == [0, 1, 2, 3]  # prompt p's choice i is index p * n + i
    assert sampled.usage.completion_tokens == 4 * 6


def test_greedy_with_n_over_1_is_vllms_400(serving_app) -> None:
    r = serving_app.post(
        "/v1/completions",
        json={"model": "tiny-llama", "prompt": "x", "n": 2, "temperature": 0, "max_tokens": 2},
    )
    assert r.status_code == 400 and "greedy" in r.json()["error"]["message"], r.text


def test_completion_logprobs(serving_app) -> None:
    out = serving_app.client().completions.create(
        model="tiny-llama", prompt="The pump", logprobs=2, temperature=0, **TOKENS
    )
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert all(v <= 0 for v in lp.token_logprobs) and all(1 <= len(top) <= 2 for top in lp.top_logprobs)
    # greedy: the chosen token is the most likely one
    assert all(lp.token_logprobs[k] >= max(lp.top_logprobs[k].values()) - 1e-4 for k in range(6))
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0


def test_chat_logprobs_plain_and_streamed(serving_app) -> None:
    client = serving_app.client()
    msgs = [{"role": "user", "content": "Which kit replaces the V3 seal?"}]
    out = client.chat.completions.create(
        model="tiny-llama", messages=msgs, logprobs=True, top_logprobs=3, temperature=0, **TOKENS
    )
    content = out.choices[0].logprobs.content
    assert len(content) == 6 and all(
        len(t.top_logprobs) == 3 and t.bytes == list(t.token.encode()) for t in content
    )
    streamed = []
    for chunk in client.chat.completions.create(
        model="tiny-llama", messages=msgs, logprobs=True, top_logprobs=3, temperature=0, stream=True, **TOKENS
    ):
        for c in chunk.choices:
            if c.logprobs and c.logprobs.content:
                streamed += [t.token for t in c.logprobs.content]
    assert streamed == [t.token for t in content]
    r = serving_app.post(
        "/v1/chat/completions", json={"model": "tiny-llama", "messages": msgs, "top_logprobs": 2}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_logprobs"


def test_seed_makes_sampling_repeatable(serving_app) -> None:
    client = serving_app.client()

    def sample(seed: int) -> str:
        return (
            client.completions.create(
                model="tiny-llama", prompt="The pump", temperature=1.0, seed=seed, **TOKENS
            )
            .choices[0]
            .text
        )

    assert sample(11) == sample(11)
    assert len({sample(s) for s in (1, 2, 3, 4)}) > 1


def test_stop_sequence_ends_the_text(serving_app) -> None:
    client = serving_app.client()
    full = (
        client.completions.create(model="tiny-llama", prompt="The pump", temperature=0, max_tokens=12)
        .choices[0]
        .text
    )
    assert len(full) > 4
    stop = full[2:4]
    out = client.completions.create(
        model="tiny-llama", prompt="The pump", temperature=0, max_tokens=12, stop=[stop]
    )
    assert out.choices[0].finish_reason == "stop" and stop not in out.choices[0].text
    assert full.startswith(out.choices[0].text)


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": ["a", "b"], "stream": True},
        {"prompt": ["a", "b"], "rag": True},
        {"prompt": ["p"] * 17},
    ],
)
def test_what_this_router_does_not_do_is_a_clear_400(serving_app, body: dict) -> None:
    r = serving_app.post("/v1/completions", json={"model": "tiny-llama", "max_tokens": 2, **body})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
    assert json.loads(r.text)["error"]["message"]


def test_response_format_json_schema_is_enforced(serving_app) -> None:
    """Structured outputs (vLLM's grammar backend on CPU): even the tiny random model can only produce JSON that
    follows the schema; json_object gives some JSON object."""
    schema = {
        "type": "object",
        "properties": {"part": {"type": "string", "enum": ["K-17", "V9"]}},
        "required": ["part"],
        "additionalProperties": False,
    }
    out = serving_app.client().chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "Which kit replaces the V3 seal? Answer in JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "part", "schema": schema}},
        max_tokens=48,
        temperature=0,
    )
    choice = out.choices[0]
    assert choice.finish_reason == "stop", choice  # the grammar ended the object, not max_tokens
    assert json.loads(choice.message.content)["part"] in ("K-17", "V9")
    r = serving_app.post(
        "/v1/chat/completions",
        json={
            "model": "tiny-llama",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema"},
        },
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format", r.text
