"""evaluation.runner: the scoring functions on case tables, and the CLI's error paths."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import UserError
from evaluation.runner import (
    EvalConfig,
    contains,
    exact_match,
    load_questions,
    normalize,
    request_body,
    rouge_l,
    score,
    source_hit,
    token_f1,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Cut-out speed is 25 m/s.", "cutout speed is 25 ms"),
        ("  A  lot\tof  SPACE ", "lot of space"),
        ("", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    "pred, ref, em, cont, f1, rl",
    [
        ("25 m/s", "25 m/s", 1.0, 1.0, 1.0, 1.0),
        (
            "The answer is 25 m/s.",
            "25 m/s",
            0.0,
            1.0,
            2 * (2 / 4) * 1 / (2 / 4 + 1),
            2 * (2 / 4) * 1 / (2 / 4 + 1),
        ),
        ("240 kg", "800 kg", 0.0, 0.0, 0.5, 0.5),
        ("kg 240", "240 kg", 0.0, 0.0, 1.0, 0.5),
        ("", "25 m/s", 0.0, 0.0, 0.0, 0.0),
        ("125 m/s", "25 m/s", 0.0, 0.0, 0.5, 0.5),  # containment is by whole tokens, not substrings
        ("It is 2.5 m/s.", "25 m/s", 0.0, 0.0, 1 / 3, 1 / 3),  # a decimal point is not punctuation to drop
        ("Tighten to 1,450 Nm.", "1,450 Nm", 0.0, 1.0, 2 / 3, 2 / 3),
        (
            "wind wind wind",
            "wind speed",
            0.0,
            0.0,
            2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2),
            2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2),
        ),
    ],
)
def test_answer_metrics(pred: str, ref: str, em: float, cont: float, f1: float, rl: float) -> None:
    assert exact_match(pred, ref) == em
    assert contains(pred, ref) == cont
    assert token_f1(pred, ref) == pytest.approx(f1)
    assert rouge_l(pred, ref) == pytest.approx(rl)


@pytest.mark.parametrize(
    "ref, sources, expected",
    [
        ("docs/manuals/x.md", [{"source": "/data/examples/docs/manuals/x.md"}], 1.0),
        ("docs/manuals/x.md", [{"source": "docs/manuals/x.md", "chunk": 3}], 1.0),
        ("docs/manuals/x.md", [{"source": "/repo/examples/docs/policies/x.md"}], 0.0),
        ("docs/manuals/x.md", [{"source": "x.md"}], 0.0),
        ("docs/manuals/x.md", [], 0.0),
        (None, [{"source": "docs/manuals/x.md"}], None),
    ],
)
def test_source_hit(ref, sources, expected) -> None:
    assert source_hit(ref, sources) == expected


def test_score_summarises_per_mode() -> None:
    qs = [
        {"id": "a", "question": "q", "answer": "25 m/s", "source": "docs/a.md"},
        {"id": "b", "question": "q", "answer": "800 kg", "source": "docs/b.md"},
    ]
    rows = [
        {"id": "a", "mode": "base", "answer": "25 m/s", "sources": [], "error": None, "latency_s": 1.0},
        {"id": "b", "mode": "base", "answer": "", "sources": [], "error": "HTTP 500: boom", "latency_s": 3.0},
        {
            "id": "a",
            "mode": "base+rag",
            "answer": "no",
            "sources": [{"source": "x/docs/a.md"}],
            "error": None,
            "latency_s": 2.0,
        },
        {
            "id": "b",
            "mode": "base+rag",
            "answer": "800 kg",
            "sources": [{"source": "docs/a.md"}],
            "error": None,
            "latency_s": 2.0,
        },
    ]
    s = score(qs, rows, ["base", "base+rag"])
    assert s["base"] == {
        "n": 2,
        "errors": 1,
        "exact_match": 0.5,
        "contains": 0.5,
        "f1": 0.5,
        "rouge_l": 0.5,
        "hit_rate": None,
        "latency_s": 1.0,
    }
    assert s["base+rag"]["hit_rate"] == 0.5 and s["base+rag"]["exact_match"] == 0.5


def test_request_body_per_mode() -> None:
    cfg = EvalConfig(base_model="tiny-llama", adapter="tiny-qlora", collection="c", top_k=2)
    assert request_body(cfg, "base", "q")["model"] == "tiny-llama"
    # non-RAG modes turn RAG off explicitly: `adapter` may name a route whose default is rag: true
    assert (
        request_body(cfg, "base", "q")["rag"] is False and request_body(cfg, "adapter", "q")["rag"] is False
    )
    assert request_body(cfg, "adapter+rag", "q")["model"] == "tiny-qlora"
    assert request_body(cfg, "base+rag", "q")["rag"] == {"collection": "c", "top_k": 2}


def test_config_needs_adapter_for_adapter_modes() -> None:
    with pytest.raises(UserError, match="adapter: required"):
        EvalConfig.from_dict({"base_model": "m", "modes": ["adapter"]})
    assert EvalConfig.from_dict({"base_model": "m", "modes": ["base", "base+rag"]}).adapter is None


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '{"id": "q1", "question": "a?", "answer": "b"}\n{"id": "q2", "question": "c?"\n',
            "line 2: not valid JSON",
        ),
        (
            '{"id": "q1", "question": "a?", "answer": "b"}\n\n{"id": "q3", "question": "", "answer": "x"}\n',
            "line 3: missing or empty question",
        ),
        (
            '{"id": "q1", "question": "a?", "answer": "b"}\n{"id": "q1", "question": "c?", "answer": "d"}\n',
            "line 2: duplicate id 'q1'",
        ),
        ("[1, 2]\n", "line 1: expected a JSON object"),
        ("\n\n", "no questions"),
    ],
)
def test_load_questions_names_the_line(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "qa.jsonl"
    f.write_text(content)
    with pytest.raises(UserError, match=message):
        load_questions(f)


def test_shipped_questions_load() -> None:
    rows = load_questions(REPO / "examples" / "qa.jsonl")
    assert len(rows) >= 20 and all((REPO / "examples" / r["source"]).is_file() for r in rows)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evaluation", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_cli_error_paths(tmp_path: Path) -> None:
    bad = tmp_path / "qa.jsonl"
    bad.write_text('{"question": "a?", "answer": "b"}\nnot json\n')
    out = _cli("--config", "evaluation/configs/local.yaml", "--questions", str(bad), "--json")
    assert out.returncode == 2 and "line 2: not valid JSON" in out.stderr and "Traceback" not in out.stderr
    assert "line 2" in json.loads(out.stdout.strip().splitlines()[-1])["error"]
    out = _cli(
        "--config", "evaluation/configs/local.yaml", "--questions", "examples/qa.jsonl", "--modes", "base,rag"
    )
    assert out.returncode == 2 and "unknown mode(s) rag" in out.stderr
    out = _cli("--config", "evaluation/configs/local.yaml", "--questions", "examples/qa.jsonl", "top_kk=3")
    assert out.returncode == 2 and "unknown config key 'top_kk'" in out.stderr
    with socket.socket() as s:  # a port nobody listens on: the endpoint check names the URL
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _cli(
        "--config",
        "evaluation/configs/local.yaml",
        "--questions",
        "examples/qa.jsonl",
        f"base_url=http://127.0.0.1:{port}/v1",
        "--json",
    )
    assert out.returncode == 2 and f"cannot reach http://127.0.0.1:{port}/v1" in out.stderr
