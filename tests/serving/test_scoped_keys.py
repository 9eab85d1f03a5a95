"""Scoped API keys on the live app: read vs ingest, allowed models and collections, a route's collection that a
request cannot leave unless its key names the target, a body-size limit on /v1/documents, and fail-closed
exposure judged on the address Serve's proxy binds."""

from __future__ import annotations

import httpx
import pytest

from serving.auth import ApiKeyConfig, KeyRing, check_exposure, serve_bound_host
from tests.serving.conftest import API_KEY, INGEST_KEY, READER_KEY, SWAP_KEY

pytestmark = pytest.mark.slow

DOC = {"source": "notes/scratch.md", "text": "Scratch notes: the spare impeller is in locker 4."}


def post(app, path: str, key: str, body: dict) -> httpx.Response:
    return app.post(path, json=body, headers={"Authorization": f"Bearer {key}"})


def chat(model: str, **extra) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Where is the impeller?"}],
        "max_tokens": 2,
        **extra,
    }


def error(r: httpx.Response) -> dict:
    return r.json()["error"]


def test_reader_sees_and_calls_only_its_models(serving_app) -> None:
    r = httpx.get(
        f"{serving_app.url}/v1/models", headers={"Authorization": f"Bearer {READER_KEY}"}, timeout=60
    )
    assert sorted(m["id"] for m in r.json()["data"]) == ["support-expert", "tiny-llama"]
    assert post(serving_app, "/v1/chat/completions", READER_KEY, chat("tiny-llama")).status_code == 200
    r = post(serving_app, "/v1/chat/completions", READER_KEY, chat("legal-v1"))
    assert r.status_code == 403 and error(r)["code"] == "model_not_allowed", r.text
    r = post(serving_app, "/v1/documents", READER_KEY, {"collection": "manuals", "documents": [DOC]})
    assert r.status_code == 403 and error(r)["code"] == "insufficient_scope", r.text


def test_ingest_key_writes_only_its_collection_and_cannot_read(serving_app) -> None:
    r = post(serving_app, "/v1/documents", INGEST_KEY, {"collection": "scratch", "documents": [DOC]})
    assert r.status_code == 200, r.text
    r = post(serving_app, "/v1/documents", INGEST_KEY, {"collection": "manuals", "documents": [DOC]})
    assert r.status_code == 403 and error(r)["code"] == "collection_not_allowed", r.text
    r = post(serving_app, "/v1/documents", INGEST_KEY, {"documents": [DOC]})  # the default: manuals
    assert r.status_code == 403 and error(r)["code"] == "collection_not_allowed", r.text
    r = post(serving_app, "/v1/chat/completions", INGEST_KEY, chat("tiny-llama"))
    assert r.status_code == 403 and error(r)["code"] == "insufficient_scope", r.text


def test_a_route_keeps_its_collection_unless_the_key_names_the_other(serving_app) -> None:
    assert (
        post(serving_app, "/v1/documents", API_KEY, {"collection": "scratch", "documents": [DOC]}).status_code
        == 200
    )
    swap = chat("support-expert", rag={"collection": "scratch", "top_k": 1})
    r = post(serving_app, "/v1/chat/completions", API_KEY, swap)  # the all-rights key: still not allowed
    assert r.status_code == 403 and error(r)["code"] == "collection_not_allowed", r.text
    r = post(serving_app, "/v1/chat/completions", READER_KEY, swap)
    assert r.status_code == 403, r.text
    r = post(serving_app, "/v1/chat/completions", SWAP_KEY, swap)  # lists "scratch" by name
    assert r.status_code == 200, r.text
    assert [s["source"] for s in r.json()["sources"]] == ["notes/scratch.md"]
    # The base model has no route: an all-rights key may search any collection.
    r = post(serving_app, "/v1/chat/completions", API_KEY, chat("tiny-llama", rag={"collection": "scratch"}))
    assert r.status_code == 200, r.text


def test_documents_body_over_the_limit_is_413(serving_app) -> None:
    big = {"collection": "scratch", "documents": [{"source": "big.md", "text": "x" * (70 * 1024)}]}
    r = post(serving_app, "/v1/documents", API_KEY, big)
    assert r.status_code == 413 and "max_document_bytes" in error(r)["message"], r.text


def test_exposure_is_judged_on_the_address_serve_binds(serving_app) -> None:
    assert serve_bound_host("0.0.0.0") == "127.0.0.1"  # asked of Serve's controller, not the default given
    open_ring = KeyRing([], None)
    check_exposure(open_ring, "127.0.0.1", False, "router.api_keys")  # loopback: fine without keys
    with pytest.raises(RuntimeError, match="binds 0.0.0.0 but no API key"):
        check_exposure(open_ring, "0.0.0.0", False, "router.api_keys")
    check_exposure(open_ring, "0.0.0.0", True, "router.api_keys")  # openness said explicitly
    check_exposure(KeyRing(["k" * 16], None), "0.0.0.0", False, "router.api_keys")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "a"}, "exactly one of key or key_env"),
        ({"name": "a", "key": "k" * 16, "key_env": "X"}, "exactly one of key or key_env"),
        ({"name": "a", "key": "short"}, "at least 16 characters"),
        ({"name": "a", "key": "k" * 16, "scopes": ["admin"]}, "'read' or 'ingest'"),
    ],
)
def test_scoped_key_config_is_validated(entry: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ApiKeyConfig.model_validate(entry)


def test_a_route_key_cannot_reach_an_adapter_of_the_same_name(serving_app) -> None:
    """The reader may call the route `support-expert`; an adapter that happens to share that name is another
    model, and `support-expert@1` must not open it (nor its collection freedom)."""
    from core.fingerprint import model_fingerprint
    from tests.serving.conftest import make_adapter

    src = make_adapter(serving_app.model_dir, serving_app.workdir / "src-lookalike", seed=21)
    fp = model_fingerprint(serving_app.model_dir)
    serving_app.store.publish(src, "support-expert", {"base_model": "tiny-llama"}, base_fingerprint=fp)
    try:
        r = post(serving_app, "/v1/chat/completions", READER_KEY, chat("support-expert@1"))
        assert r.status_code == 403 and error(r)["code"] == "model_not_allowed", r.text
        assert post(serving_app, "/v1/chat/completions", API_KEY, chat("support-expert@1")).status_code == 200
    finally:
        serving_app.store.delete("support-expert")
