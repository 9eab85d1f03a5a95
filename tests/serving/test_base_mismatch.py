"""Adapters belong to a base: one trained on another base is neither listed nor answered, and says why."""

from __future__ import annotations

import pytest

from tests.serving.conftest import FOREIGN, FOREIGN_BASE

pytestmark = pytest.mark.slow


def _mismatch(r, adapter: str = FOREIGN) -> dict:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == "model" and err["code"] == "adapter_base_mismatch"
    assert adapter in err["message"] and FOREIGN_BASE in err["message"] and "tiny-llama" in err["message"]
    return err


def test_foreign_adapter_is_not_listed(serving_app) -> None:
    ids = {m.id for m in serving_app.client().models.list().data}
    assert FOREIGN not in ids
    assert {"tiny-llama", "support-v3", "legal-v1"} <= ids  # compatible adapters still are


@pytest.mark.parametrize("chat", [True, False])
def test_request_for_foreign_adapter_is_refused_naming_both_bases(serving_app, chat: bool) -> None:
    if chat:
        body = {"model": FOREIGN, "messages": [{"role": "user", "content": "The pump"}], "max_tokens": 2}
        r = serving_app.post("/v1/chat/completions", json=body)
    else:
        r = serving_app.post(
            "/v1/completions", json={"model": FOREIGN, "prompt": "The pump", "max_tokens": 2}
        )
    _mismatch(r)


def test_streaming_request_is_refused_before_the_stream(serving_app) -> None:
    body = {"model": FOREIGN, "prompt": "The pump", "max_tokens": 2, "stream": True}
    _mismatch(serving_app.post("/v1/completions", json=body))


def test_route_to_foreign_adapter_is_refused(serving_app) -> None:
    r = serving_app.post("/v1/completions", json={"model": "foreign-route", "prompt": "The", "max_tokens": 2})
    assert "foreign-route" in _mismatch(r)["message"]


def test_openai_client_sees_a_bad_request(serving_app) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        serving_app.client().completions.create(model=FOREIGN, prompt="The pump", max_tokens=2)
    assert info.value.code == "adapter_base_mismatch"


def test_compatible_adapters_still_answer(serving_app) -> None:
    client = serving_app.client()
    for name in ("support-v3", "legal-v1", "support-expert"):
        r = client.completions.create(model=name, prompt="The pump", max_tokens=2)
        assert r.usage.completion_tokens >= 1


def test_adapter_without_fingerprint_is_refused(serving_app) -> None:
    """Published before fingerprints (or by hand without one): it cannot be checked, so it is not served."""
    from tests.serving.conftest import make_adapter

    src = make_adapter(serving_app.model_dir, serving_app.workdir / "src-legacy", seed=7)
    serving_app.store.publish(src, "legacy-v1", {"base_model": "tiny-llama"})
    r = serving_app.post("/v1/completions", json={"model": "legacy-v1", "prompt": "The", "max_tokens": 2})
    assert r.status_code == 400 and "no base fingerprint" in r.json()["error"]["message"]
    assert "legacy-v1" not in {m.id for m in serving_app.client().models.list().data}


def test_republished_for_this_base_answers_at_once(serving_app) -> None:
    """A refusal re-lists the store, so an adapter re-published with the right fingerprint is served at once."""
    from core.fingerprint import model_fingerprint
    from tests.serving.conftest import make_adapter

    src = make_adapter(serving_app.model_dir, serving_app.workdir / "src-moved", seed=8)
    serving_app.store.publish(src, "moved-v1", {"base_model": "elsewhere"}, base_fingerprint="nope")
    body = {"model": "moved-v1", "prompt": "The", "max_tokens": 2}
    assert serving_app.post("/v1/completions", json=body).status_code == 400
    fp = model_fingerprint(serving_app.model_dir)
    serving_app.store.publish(
        src, "moved-v1", {"base_model": "tiny-llama"}, overwrite=True, base_fingerprint=fp
    )
    r = serving_app.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text


def test_llm_deployment_refuses_foreign_adapter_itself(serving_app) -> None:
    """Defence in depth: a caller that bypasses the router (another app, a batch job) is refused too."""
    from ray import serve

    handle = serve.get_deployment_handle("LLMServer", app_name="expert-test")
    gen = handle.options(multiplexed_model_id=FOREIGN, stream=True).generate.remote(
        {"prompt_token_ids": [1, 2, 3], "sampling": {"max_tokens": 2}, "stream": True}
    )
    item = next(gen)
    assert item["status"] == 400 and item["param"] == "model" and item["code"] == "adapter_base_mismatch"
    assert FOREIGN in item["error"] and FOREIGN_BASE in item["error"] and "tiny-llama" in item["error"]
