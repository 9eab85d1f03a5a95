"""The serving app end to end through the official openai client: models, chat, completions, adapters, RAG."""

from __future__ import annotations

import json

import httpx
import pytest

from core.fingerprint import model_fingerprint

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0, "max_tokens": 12, "extra_body": {"ignore_eos": True}}


def test_models_lists_base_adapters_and_routes(serving_app) -> None:
    models = {m.id: m.model_dump() for m in serving_app.client().models.list().data}
    assert models["tiny-llama"]["root"] == str(serving_app.model_dir)
    assert models["tiny-llama"]["parent"] is None
    for name in ("support-v3", "legal-v1"):
        assert models[name]["parent"] == "tiny-llama"
        assert models[name]["version"] == 1 and models[name]["root"].endswith(f"{name}/1")
    assert models["support-expert"]["root"] == "support-v3"
    assert models["support-expert"]["route"]["collection"] == "manuals"


def test_chat_base_non_stream_and_stream_agree(serving_app) -> None:
    client = serving_app.client()
    msgs = [{"role": "user", "content": "How often is the pump flushed?"}]
    full = client.chat.completions.create(model="tiny-llama", messages=msgs, **GREEDY)
    assert full.choices[0].message.role == "assistant"
    assert full.usage.completion_tokens == 12  # ignore_eos passed through to vLLM
    assert full.usage.prompt_tokens > 5
    assert "sources" not in full.model_extra  # RAG is off for the base model unless asked
    parts, finish, extra = [], None, {}
    for chunk in client.chat.completions.create(model="tiny-llama", messages=msgs, stream=True, **GREEDY):
        extra.update(chunk.model_extra or {})
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(parts) == full.choices[0].message.content
    assert finish == "length"
    assert "sources" not in extra and "rag" not in extra  # no RAG fields on a base-model stream


def test_completions_non_stream_and_stream(serving_app) -> None:
    client = serving_app.client()
    full = client.completions.create(model="tiny-llama", prompt="The valve", **GREEDY)
    assert full.usage.completion_tokens == 12
    chunks = list(
        client.completions.create(
            model="tiny-llama",
            prompt="The valve",
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    assert chunks[-1].usage.completion_tokens == 12


def test_adapter_changes_the_output(serving_app) -> None:
    client = serving_app.client()
    base = client.completions.create(model="tiny-llama", prompt="The pump", **GREEDY).choices[0].text
    a = client.completions.create(model="support-v3", prompt="The pump", **GREEDY).choices[0].text
    b = client.completions.create(model="legal-v1", prompt="The pump", **GREEDY).choices[0].text
    assert a != base and b != base and a != b
    again = client.completions.create(model="support-v3", prompt="The pump", **GREEDY).choices[0].text
    assert again == a  # greedy decoding with the same adapter is reproducible


def test_vllm_sampling_params_pass_through(serving_app) -> None:
    client = serving_app.client()
    r = client.completions.create(
        model="tiny-llama",
        prompt="Safety",
        max_tokens=20,
        extra_body={"min_tokens": 20, "top_k": 5, "seed": 7, "repetition_penalty": 1.1},
    )
    assert r.usage.completion_tokens == 20
    r2 = client.completions.create(
        model="tiny-llama",
        prompt="Safety",
        max_tokens=20,
        extra_body={"min_tokens": 20, "top_k": 5, "seed": 7, "repetition_penalty": 1.1},
    )
    assert r2.choices[0].text == r.choices[0].text  # the seed reached vLLM


def test_rag_route_returns_sources(serving_app) -> None:
    client = serving_app.client()
    r = client.chat.completions.create(
        model="support-expert",
        messages=[{"role": "user", "content": "What torque for the pump housing bolts?"}],
        max_tokens=8,
    )
    extra = r.model_extra
    assert extra["rag"]["collection"] == "manuals" and extra["rag"]["degraded"] is False
    assert 0 < extra["rag"]["retrieval_ms"] < 60_000  # the router's own clock around the retriever call
    sources = extra["sources"]
    assert 1 <= len(sources) <= 2
    assert sources[0]["source"] == "manuals/pump.md"
    assert {"source", "chunk", "score"} <= set(sources[0])
    # the context really went into the prompt: more prompt tokens than the same question without RAG
    plain = client.chat.completions.create(
        model="support-v3",
        messages=[{"role": "user", "content": "What torque for the pump housing bolts?"}],
        max_tokens=8,
    )
    assert r.usage.prompt_tokens > plain.usage.prompt_tokens + 20


def test_rag_per_request_streaming_sources_in_final_chunk(serving_app) -> None:
    client = serving_app.client()
    chunks = list(
        client.chat.completions.create(
            model="tiny-llama",
            messages=[{"role": "user", "content": "Which kit replaces a leaking V3 seal?"}],
            max_tokens=8,
            stream=True,
            extra_body={
                "rag": {"collection": "manuals", "top_k": 1, "filter": {"source": "manuals/valve.md"}}
            },
        )
    )
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert final.model_extra["sources"][0]["source"] == "manuals/valve.md"
    assert len(final.model_extra["sources"]) == 1
    assert all("sources" not in c.model_extra for c in chunks if c is not final)


def test_rag_drops_chunks_that_do_not_fit(serving_app) -> None:
    client = serving_app.client()
    question = [{"role": "user", "content": "pump valve safety " * 40}]
    small = client.chat.completions.create(
        model="tiny-llama",
        messages=question,
        max_tokens=8,
        extra_body={"rag": {"collection": "manuals", "top_k": 3}},
    )
    assert len(small.model_extra["sources"]) == 3
    # leave room for the question but not for every chunk: the lowest-ranked ones go
    tight = client.chat.completions.create(
        model="tiny-llama",
        messages=question,
        max_tokens=512 - small.usage.prompt_tokens + 40,
        extra_body={"rag": {"collection": "manuals", "top_k": 3}},
    )
    used = tight.model_extra["sources"]
    assert len(used) < 3
    assert [s["source"] for s in used] == [s["source"] for s in small.model_extra["sources"][: len(used)]]
    assert tight.usage.prompt_tokens + tight.usage.completion_tokens <= 512


def test_ingest_endpoint_adds_searchable_documents(serving_app) -> None:
    doc = {
        "source": "manuals/fan.md",
        "title": "Fan",
        "text": "# Fan\n\nThe cooling fan F-9 is cleaned with dry air monthly.",
    }
    r = serving_app.post("/v1/documents", json={"collection": "manuals", "documents": [doc]})
    assert r.status_code == 200, r.text
    assert r.json()["chunks"] >= 1
    out = serving_app.client().chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "How is the cooling fan F-9 cleaned?"}],
        max_tokens=4,
        extra_body={"rag": {"collection": "manuals", "top_k": 1}},
    )
    assert out.model_extra["sources"][0]["source"] == "manuals/fan.md"


def test_hot_loaded_adapter_is_listed_and_answers(serving_app) -> None:
    from tests.serving.conftest import make_adapter

    client = serving_app.client()
    assert "fresh-v1" not in {m.id for m in client.models.list().data}
    src = make_adapter(serving_app.model_dir, serving_app.workdir / "src-fresh", seed=42)
    serving_app.store.publish(
        src,
        "fresh-v1",
        {"base_model": "tiny-llama"},
        base_fingerprint=model_fingerprint(serving_app.model_dir),
    )
    r = client.completions.create(model="fresh-v1", prompt="The pump", **GREEDY)  # a miss re-lists the store
    base = client.completions.create(model="tiny-llama", prompt="The pump", **GREEDY)
    assert r.usage.completion_tokens == 12 and r.choices[0].text != base.choices[0].text
    assert "fresh-v1" in {m.id for m in client.models.list().data}


def test_republished_adapter_is_served_on_the_next_request(serving_app) -> None:
    """Same name, new weights: the next request gets the new version (no restart, no stale cache); `name@1`
    pins the old one; moving the pointer back rolls back; a missing version is a 404 naming those that exist."""
    from tests.serving.conftest import make_adapter

    client, fp = serving_app.client(), model_fingerprint(serving_app.model_dir)

    def publish(seed: int) -> str:
        src = make_adapter(serving_app.model_dir, serving_app.workdir / f"src-swap-{seed}", seed=seed)
        meta = {"base_model": "tiny-llama"}
        return serving_app.store.publish(src, "swap", meta, overwrite=True, base_fingerprint=fp).ref

    def answer(model: str) -> str:
        return client.completions.create(model=model, prompt="The pump", **GREEDY).choices[0].text

    assert publish(7) == "swap@1"
    first = answer("swap")  # loads swap@1 into the replica
    assert publish(8) == "swap@2"
    second = answer("swap")
    assert second != first and answer("swap@2") == second and answer("swap@1") == first
    serving_app.store.set_current("swap@1")
    assert answer("swap") == first
    card = next(m for m in client.models.list().data if m.id == "swap")
    assert card.model_extra["version"] in (1, 2)  # the listing refreshes every refresh_s; requests never wait
    r = serving_app.post("/v1/completions", json={"model": "swap@9", "prompt": "x", "max_tokens": 2})
    assert r.status_code == 404 and "no version 9" in r.json()["error"]["message"], r.text


def test_healthz(serving_app) -> None:
    r = httpx.get(f"{serving_app.url}/healthz", timeout=30)
    assert r.status_code == 200
    body = r.json()
    assert {k: body[k] for k in ("status", "llm", "retriever")} == {
        "status": "ok",
        "llm": "ok",
        "retriever": "ok",
    }
    assert (body["in_flight"], body["queued"]) == (0, 0)


def test_engine_started_while_another_process_held_3_gib(serving_app) -> None:
    """conftest started the app beside a process keeping 3 GiB resident (KV cache sized in bytes, not a share)."""
    assert serving_app.started_beside_gib >= 2.9


def test_sse_wire_format(serving_app) -> None:
    body = {"model": "tiny-llama", "prompt": "The", "max_tokens": 4, "stream": True}
    r = serving_app.post("/v1/completions", json=body)
    lines = [line for line in r.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "text_completion"


def test_sse_rag_stream_ends_with_sources_then_done(serving_app) -> None:
    body = {
        "model": "tiny-llama",
        "prompt": "valve",
        "max_tokens": 4,
        "stream": True,
        "rag": {"collection": "manuals", "top_k": 1},
    }
    r = serving_app.post("/v1/completions", json=body)
    lines = [line for line in r.text.split("\n") if line]
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][6:])
    assert last["sources"] and {"source", "chunk", "score"} <= set(last["sources"][0])


@pytest.mark.parametrize(
    "request_filter, expected",
    [
        (None, {"manuals/valve.md"}),  # the route's own filter applies
        ({"source": "manuals/valve.md"}, {"manuals/valve.md"}),  # narrowing to the same is fine
        ({"source": "manuals/pump.md"}, set()),  # a request cannot widen the route to other documents
    ],
)
def test_route_filter_cannot_be_widened_by_a_request(serving_app, request_filter, expected) -> None:
    rag = {"filter": request_filter} if request_filter else {}
    full = serving_app.client().chat.completions.create(
        model="valve-only",
        messages=[{"role": "user", "content": "pump flushing interval"}],
        max_tokens=2,
        extra_body={"rag": rag} if rag else None,
    )
    assert {s["source"] for s in full.model_extra["sources"]} == expected


def test_metrics_per_adapter_reach_rays_metrics_endpoint(serving_app) -> None:
    import time

    import ray

    client = serving_app.client()
    client.completions.create(model="legal-v1", prompt="The pump", max_tokens=2)
    port = ray._private.worker.global_worker.node.metrics_export_port
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:  # Ray exports application metrics every few seconds
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if "domain_expert_requests_total{" in text and 'adapter="legal-v1"' in text:
            break
        time.sleep(2)
    lines = [
        line
        for line in text.splitlines()
        if "domain_expert_completion_tokens_total{" in line and 'adapter="legal-v1"' in line
    ]
    assert lines and float(lines[0].rsplit(" ", 1)[1]) >= 2
    assert "domain_expert_time_to_first_token_s_bucket" in text


def test_adapter_trained_by_the_project_is_served(serving_app, trained_adapter) -> None:
    """The adapter `python -m training` published (QLoRA, ZeRO-3) loads in vLLM and answers through the router."""
    from pathlib import Path

    serving_app.store.publish(
        Path(trained_adapter["path"]),
        "trained-e2e",
        {"base_model": "tiny-llama"},
        base_fingerprint=model_fingerprint(serving_app.model_dir),
    )
    client = serving_app.client()
    r = client.chat.completions.create(
        model="trained-e2e", messages=[{"role": "user", "content": "How do I check the pump?"}], **GREEDY
    )
    assert r.usage.completion_tokens == 12
    assert "trained-e2e" in {m.id for m in client.models.list().data}


def test_embeddings_are_the_retrievers(serving_app) -> None:
    """`/v1/embeddings` through the official client (it asks for base64 and decodes it): the retriever's own
    embedder, unit-length vectors, listed in /v1/models; another model, other dimensions or empty input: 4xx."""
    import math

    client = serving_app.client()
    cards = {m.id: m.model_extra for m in client.models.list().data}
    assert cards["all-MiniLM-L6-v2"]["dimensions"] == 384
    out = client.embeddings.create(
        model="all-MiniLM-L6-v2", input=["How is the pump flushed?", "Valve V3 isolates the pump."]
    )
    vectors = [d.embedding for d in out.data]
    assert [d.index for d in out.data] == [0, 1] and all(len(v) == 384 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)
    assert out.usage.prompt_tokens > 10
    floats = serving_app.post(
        "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "Valve V3 isolates the pump."}
    ).json()["data"][0]["embedding"]
    assert max(abs(a - b) for a, b in zip(floats, vectors[1], strict=True)) < 1e-5  # float and base64 agree
    for body, status in [
        ({"model": "text-embedding-3-small", "input": "x"}, 404),
        ({"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 128}, 400),
        ({"model": "all-MiniLM-L6-v2", "input": ["  "]}, 400),
    ]:
        r = serving_app.post("/v1/embeddings", json=body)
        assert r.status_code == status and r.json()["error"]["message"], r.text
