"""Bad input and failure: every error answers OpenAI-style JSON with the right status, never a traceback."""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import openai
import pytest

from tests.driver_output import own_lines
from tests.serving.conftest import API_KEY

pytestmark = pytest.mark.slow

CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert "Traceback" not in err["message"]
    return err


def test_malformed_json_is_400(serving_app) -> None:
    r = serving_app.post(
        "/v1/chat/completions",
        content=b'{"model": "tiny-llama", "messages": [',
        headers={"Content-Type": "application/json"},
    )
    assert "not valid JSON" in error_of(r, 400)["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({**CHAT, "messages": []}, "messages"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
        ({**CHAT, "temperature": 9}, "temperature"),
        ({**CHAT, "frobnicate": True}, "frobnicate"),
        ({**CHAT, "n": 17}, "n"),
        ({**CHAT, "rag": {"colection": "manuals"}}, "rag.RagOptions.colection"),
    ],
)
def test_schema_errors_are_400_naming_the_parameter(serving_app, body: dict, param: str) -> None:
    err = error_of(serving_app.post("/v1/chat/completions", json=body), 400)
    assert err["param"].startswith(param.split(".")[0])
    assert param.split(".")[-1] in err["message"]


def test_invalid_sampling_value_rejected_by_vllm_is_400(serving_app) -> None:
    err = error_of(
        serving_app.post("/v1/completions", json={"model": "tiny-llama", "prompt": "x", "top_k": -5}), 400
    )
    assert "top_k" in err["message"]


@pytest.mark.parametrize(
    "model", ["no-such-adapter", "../../etc/passwd", "/tmp/adapter", "support-v3/../legal-v1"]
)
def test_unknown_or_path_like_model_is_404(serving_app, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        serving_app.client().chat.completions.create(model=model, messages=CHAT["messages"], max_tokens=2)
    assert exc.value.body["param"] == "model"


def test_prompt_over_context_is_400_with_numbers(serving_app) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        serving_app.client().completions.create(model="tiny-llama", prompt="pump valve " * 400, max_tokens=50)
    msg = exc.value.body["message"]
    assert "512" in msg and "50" in msg and exc.value.body["code"] == "context_length_exceeded"


def test_missing_or_wrong_api_key_is_401(serving_app) -> None:
    r = httpx.post(f"{serving_app.url}/v1/chat/completions", json=CHAT, timeout=30)
    assert error_of(r, 401)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{serving_app.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(f"{serving_app.url}/healthz", timeout=30).status_code == 200  # health stays open


def test_unknown_collection_is_404(serving_app) -> None:
    body = {**CHAT, "rag": {"collection": "nope"}}
    assert "nope" in error_of(serving_app.post("/v1/chat/completions", json=body), 404)["message"]


def test_unknown_path_is_openai_style_404(serving_app) -> None:
    error_of(serving_app.post("/v1/engines", json={}), 404)


def test_retriever_timeout_fails_or_degrades_per_route(serving_app) -> None:
    client = serving_app.client()
    msgs = [{"role": "user", "content": "pump torque?"}]
    with pytest.raises(openai.InternalServerError) as exc:  # 503
        client.chat.completions.create(model="rag-strict", messages=msgs, max_tokens=4)
    assert exc.value.status_code == 503 and "timed out" in exc.value.body["message"]
    r = client.chat.completions.create(model="rag-lenient", messages=msgs, max_tokens=4)
    assert r.model_extra["rag"]["degraded"] is True
    assert r.model_extra["sources"] == []
    assert r.choices[0].message.content is not None


def test_bad_documents_are_400(serving_app) -> None:
    err = error_of(
        serving_app.post("/v1/documents", json={"collection": "manuals", "documents": [{"text": "x"}]}), 400
    )
    assert "source" in err["message"]


def test_overload_is_queued_then_answered_429_with_retry_after(serving_app) -> None:
    """max_in_flight 24 + max_queued 8 (conftest): of 48 long requests at once, the 8 above the in-flight limit
    wait and are answered; only the 16 beyond the queue get 429, at once, with Retry-After, never a hang."""
    body = {"model": "tiny-llama", "prompt": "The", "max_tokens": 400, "ignore_eos": True, "temperature": 0}
    headers = {"Authorization": f"Bearer {API_KEY}"}

    def one(_: int) -> tuple[int, str | None]:
        r = httpx.post(f"{serving_app.url}/v1/completions", json=body, headers=headers, timeout=300)
        return r.status_code, r.headers.get("retry-after")

    with cf.ThreadPoolExecutor(48) as pool:
        results = list(pool.map(one, range(48)))
    codes = [c for c, _ in results]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) >= 32, codes  # in flight + queued, all answered
    assert codes.count(429) >= 1
    assert all(ra and int(ra) >= 1 for c, ra in results if c == 429)
    health = httpx.get(f"{serving_app.url}/healthz", timeout=30).json()
    assert (health["in_flight"], health["queued"]) == (0, 0)  # every slot came back


def test_a_serve_failure_is_one_line_at_the_cli_boundary(
    serving_app, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A real Ray Serve failure on the running Serve instance (an application that does not exist) reaches a
    CLI's boundary as one line naming Ray Serve, with the traceback in the log file, never on the terminal."""
    import json
    from pathlib import Path

    from ray import serve

    from core.cli import run_cli

    monkeypatch.setenv("DE_DATA_DIR", str(tmp_path / "data"))

    def main(argv: list[str] | None) -> int:
        serve.get_app_handle("no-such-app")
        return 0

    assert run_cli(main, ["--json"]) == 1
    out, err = capsys.readouterr()
    ours = own_lines(err)  # replicas' log lines reach this driver's stderr at any moment
    assert "Traceback" not in "\n".join(ours) and "Traceback" not in out
    assert len(ours) == 1 and ours[0].startswith(
        "error: Ray Serve failed: RayServeException: Application 'no-such-app' does not exist"
    ), ours
    last = json.loads(out.strip().splitlines()[-1])
    assert last["kind"] == "Ray Serve" and "Traceback" in Path(last["log"]).read_text()
