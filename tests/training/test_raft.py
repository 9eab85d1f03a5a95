"""RAFT rows against a real Milvus Lite file and the real MiniLM embedder: gold in, gold out, plain, layout."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import UserError
from retrieval import RetrievalConfig, Retriever
from retrieval.context import DEFAULT_SYSTEM_PROMPT, with_context_chat
from retrieval.embedder import SentenceTransformerEmbedder
from training.config import DataSettings, RaftSettings, TrainConfig
from training.raft import build_rows, prepare, read_jsonl

REPO = Path(__file__).resolve().parents[2]
COLLECTION = "raft_docs"
PUMP, VALVE, TRAVEL, CRANE = (
    "manuals/pump.md",
    "manuals/valve.md",
    "policies/travel.txt",
    "procedures/crane.md",
)
DOCS = {
    PUMP: "# P-40 Pump Manual\n\n## Pressure\nThe P-40 pump runs at 6.5 bar nominal pressure and trips at 9 bar.\n\n"
    "## Seals\nReplace the P-40 pump shaft seal every 2,000 operating hours.\n",
    VALVE: "# V-12 Valve Guide\n\n## Opening\nThe V-12 relief valve opens at 3.2 bar.\n\n"
    "## Testing\nTest the V-12 valve once a year with the blue test kit.\n",
    TRAVEL: "Travel policy\n\nThe per diem is EUR 42 for a full travel day. Private cars are reimbursed at "
    "EUR 0.32 per kilometre.\n",
    CRANE: "# Nacelle Crane Procedure\n\n## Load\nThe nacelle crane has a safe working load of 800 kg.\n\n"
    "## Inspection\nInspect the crane hook and chain before every lift.\n",
}
QUESTIONS = [
    ("What pressure does the P-40 pump run at?", "6.5 bar.", PUMP),
    ("When do I replace the P-40 shaft seal?", "Every 2,000 operating hours.", PUMP),
    ("At what pressure does the V-12 relief valve open?", "At 3.2 bar.", VALVE),
    ("How often is the V-12 valve tested?", "Once a year, with the blue test kit.", VALVE),
    ("What is the per diem for a full travel day?", "EUR 42.", TRAVEL),
    ("How much do I get per kilometre in my own car?", "EUR 0.32.", TRAVEL),
    ("What can the nacelle crane lift?", "800 kg.", CRANE),
    ("What do I check before a crane lift?", "The hook and the chain.", CRANE),
    ("What is the P-40 trip pressure?", "9 bar.", PUMP),
    ("Which kit tests the V-12 valve?", "The blue test kit.", VALVE),
]
_CTX = re.compile(r"^\[(\d+)\] \((.+?)\) ", re.MULTILINE)


def chat_row(q: str, a: str, source: str | None) -> dict:
    row = {
        "messages": [
            {"role": "system", "content": "You are a support assistant."},
            {"role": "user", "content": q},
            {"role": "assistant", "content": a},
        ]
    }
    return row | ({"source": source} if source else {})


ROWS = [chat_row(q, a, s) for q, a, s in QUESTIONS] + [
    chat_row("How heavy a load may the crane take?", "800 kg.", None),  # no source: hits as they come
    chat_row("What pressure does the V-12 valve open at?", "3.2 bar.", "manuals/not-ingested.md"),
]


def context_sources(msg: dict) -> list[str]:
    return [m.group(2) for m in _CTX.finditer(msg["content"])]


def ingest(uri: str, embedder: SentenceTransformerEmbedder, collection: str = COLLECTION) -> None:
    """Index DOCS into a Lite file and close it again (the file lock must be free for other processes)."""
    r = Retriever(RetrievalConfig(uri=uri, chunk_tokens=64, chunk_overlap=16), embedder)
    try:
        report = r.ingest_texts([{"source": s, "text": t} for s, t in DOCS.items()], collection)
        assert report["files"] == len(DOCS) and not report["errors"], report
    finally:
        r.close()


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="module")
def retriever(session_data_dir: Path, embedder: SentenceTransformerEmbedder):
    uri = str(session_data_dir / "raft-tests.db")
    ingest(uri, embedder)
    r = Retriever(RetrievalConfig(uri=uri), embedder)
    yield r
    r.close()


@pytest.fixture(scope="module")
def built(retriever: Retriever) -> tuple[list[dict], dict]:
    return build_rows(
        ROWS, retriever, COLLECTION, top_k=3, no_answer_fraction=0.5, plain_fraction=0.3, seed=0
    )


def test_report_counts_every_kind(built):
    rows, report = built
    assert len(rows) == len(ROWS) == report["rows"]
    kinds = ("plain", "with_gold", "no_answer", "gold_missing_from_index", "no_source")
    assert sum(report[k] for k in kinds) == len(ROWS)
    assert report["plain"] == round(0.3 * len(ROWS))
    assert report["no_answer"] >= 1 and report["with_gold"] >= 1
    assert report["missing_sources"] == ["manuals/not-ingested.md"]
    assert [r["raft"] for r in rows].count("plain") == report["plain"]
    for r, src in zip(rows, ROWS, strict=True):
        assert r.get("source") == src.get("source") and r["messages"][-1] == src["messages"][-1]


def test_gold_chunk_is_in_with_gold_rows_and_absent_from_no_answer_rows(built):
    rows, _ = built
    for r in rows:
        if r["raft"] not in ("with_gold", "no_answer"):
            continue
        system, user, answer = r["messages"]
        assert system["role"] == "system" and user["role"] == "user" and answer["role"] == "assistant"
        sources = context_sources(system)
        assert len(sources) == 3, system["content"]  # no-answer rows are topped up to top_k
        if r["raft"] == "with_gold":
            assert r["source"] in sources, (user["content"], sources)
        else:
            assert r["source"] not in sources, (user["content"], sources)


def test_plain_rows_have_no_context_and_no_system_message(built):
    rows, _ = built
    plain = [r for r in rows if r["raft"] == "plain"]
    assert plain
    for r in plain:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert "Context:" not in json.dumps(r["messages"])


def test_layout_is_exactly_servings(built, retriever: Retriever):
    """Rows retrieval served untouched equal with_context_chat of the same hits (the serving layout)."""
    rows, _ = built
    checked = 0
    for r, src in zip(rows, ROWS, strict=True):
        if r["raft"] in ("plain", "no_answer"):
            continue
        user, answer = src["messages"][1], src["messages"][2]
        hits = retriever.search(user["content"], 3, mode="hybrid", collection=COLLECTION)
        if r["raft"] == "with_gold" and r["source"] not in {h.source for h in hits}:
            continue  # gold was put in: checked in the next test
        expected = with_context_chat([user], [h.to_dict() for h in hits], DEFAULT_SYSTEM_PROMPT) + [answer]
        assert r["messages"] == expected
        checked += 1
    assert checked >= 3


def test_missed_gold_replaces_the_lowest_hit(retriever: Retriever):
    row = chat_row("What pressure does the P-40 pump run at?", "6.5 bar.", TRAVEL)  # retrieval cannot find it
    hits = retriever.search(row["messages"][1]["content"], 2, collection=COLLECTION)
    assert TRAVEL not in {h.source for h in hits}
    rows, report = build_rows([row], retriever, COLLECTION, top_k=2, no_answer_fraction=0, plain_fraction=0)
    assert report["with_gold"] == 1 and report["gold_added"] == 1
    assert context_sources(rows[0]["messages"][0]) == [hits[0].source, TRAVEL]


def test_same_seed_same_rows_other_seed_other_choice(built, retriever: Retriever):
    again = build_rows(
        ROWS, retriever, COLLECTION, top_k=3, no_answer_fraction=0.5, plain_fraction=0.3, seed=0
    )
    assert again == built
    other, _ = build_rows(
        ROWS, retriever, COLLECTION, top_k=3, no_answer_fraction=0.5, plain_fraction=0.3, seed=1
    )
    assert [r["raft"] for r in other] != [r["raft"] for r in built[0]]


def test_bad_input_is_a_user_error(retriever: Retriever, tmp_path: Path):
    with pytest.raises(UserError, match="plain_fraction"):
        build_rows(ROWS, retriever, COLLECTION, plain_fraction=1.5)
    with pytest.raises(UserError, match="does not exist"):
        build_rows(ROWS, retriever, "no_such_collection")
    with pytest.raises(UserError, match="row 1: needs a non-empty user message"):
        build_rows([{"messages": [{"role": "user", "content": "hi"}]}], retriever, COLLECTION)
    with pytest.raises(UserError, match="not found"):
        read_jsonl(str(tmp_path / "missing.jsonl"))


def ingest_in_child(db: Path, docs: Path) -> None:
    """Milvus Lite keeps a file locked by the process that opened it (even after close), and the CLI and the launch
    hook read it from child processes: ingest DOCS in a child process too."""
    for rel, text in DOCS.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text(text)
    cmd = [sys.executable, "-m", "retrieval", "ingest", "--uri", str(db), "--collection", COLLECTION,
           "--base", str(docs), str(docs), "--json"]  # fmt: skip
    ingested = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert ingested.returncode == 0, ingested.stderr[-3000:]


@pytest.mark.slow
def test_config_field_and_launch_hook(session_data_dir: Path, tmp_path: Path):
    ingest_in_child(session_data_dir / "raft-hook.db", tmp_path / "docs")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    settings = DataSettings(
        path=str(data),
        rag_context=RaftSettings(enabled=True, collection=COLLECTION, uri="data:raft-hook.db", top_k=2),
    )
    new, report = prepare(settings, tmp_path / "run")
    assert new.path == str(tmp_path / "run" / "raft-data.jsonl") and new.rag_context == settings.rag_context
    assert report["uri"] == str(session_data_dir / "raft-hook.db") and report["rows"] == len(ROWS)
    assert len(read_jsonl(new.path)) == len(ROWS)
    cfg = TrainConfig.from_file(REPO / "training/configs/smollm2-qlora-raft.yaml")
    assert cfg.data.rag_context is not None and cfg.data.rag_context.collection == "helix_docs"
    with pytest.raises(UserError, match="rag_context needs format 'messages'"):
        TrainConfig.from_file(REPO / "training/configs/smollm2-qlora-raft.yaml", ["data.format=alpaca"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "training", "raft-data", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_writes_rows_and_one_json_line(session_data_dir: Path, tmp_path: Path):
    ingest_in_child(session_data_dir / "raft-cli.db", tmp_path / "docs")
    data, out = tmp_path / "rows.jsonl", tmp_path / "out" / "raft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    proc = _cli("--data", str(data), "--collection", COLLECTION, "--uri", "data:raft-cli.db",
                "--top-k", "2", "--out", str(out), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rows"] == len(ROWS) and result["out"] == str(out) and result["plain"] == 4
    assert [json.loads(line)["raft"] for line in out.read_text().splitlines()].count("plain") == 4
    assert not list(out.parent.glob(".*tmp*"))  # written through a temp file, nothing left behind


def test_cli_bad_fraction_exits_2_without_traceback(tmp_path: Path):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(ROWS[0]) + "\n")
    proc = _cli("--data", str(data), "--collection", COLLECTION, "--plain-fraction", "1.5",
                "--out", str(tmp_path / "o.jsonl"), "--json")  # fmt: skip
    assert proc.returncode == 2
    assert "plain_fraction must be a number from 0 to 1, got 1.5" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error" in json.loads(proc.stdout.strip().splitlines()[-1])
    assert not (tmp_path / "o.jsonl").exists()
