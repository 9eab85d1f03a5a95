"""`python -m retrieval` as users and scripts run it: exit codes, one-line errors, the --json last line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.retrieval.conftest import write_docs

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "retrieval", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=300,
    )


def last_json(proc: subprocess.CompletedProcess[str]):
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr


@pytest.mark.slow
def test_ingest_search_delete_json_contract(tmp_path: Path):
    docs = write_docs(tmp_path / "docs")
    (docs / "notes.docx").write_bytes(b"PK\x03\x04")
    db = str(tmp_path / "cli.db")
    proc = run("ingest", "--uri", db, "--collection", "kb", "--base", str(tmp_path), str(docs), "--json")
    assert proc.returncode == 0, proc.stderr
    report = last_json(proc)
    assert report["files"] == 4 and report["chunks"] >= 4 and report["errors"] == []
    assert [x["source"] for x in report["skipped"]] == ["docs/notes.docx"]
    assert report["skipped"][0]["reason"].startswith("unsupported file type .docx; supported: ")

    proc = run("search", "--uri", db, "--collection", "kb", "--top-k", "2", "--json", "yaw bearing grease")
    assert proc.returncode == 0, proc.stderr
    hits = last_json(proc)
    assert isinstance(hits, list) and 1 <= len(hits) <= 2
    assert set(hits[0]) >= {"source", "chunk", "text", "score", "title", "id"}
    assert hits[0]["source"] == "docs/manuals/yaw.pdf"

    proc = run("delete", "--uri", db, "--collection", "kb", "--source", "docs/manuals/yaw.pdf", "--json")
    assert proc.returncode == 0 and last_json(proc)["deleted"] >= 1, proc.stderr


def test_nothing_ingested_exits_1_with_reason(tmp_path: Path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "empty.md").write_text("")
    (tmp_path / "bad" / "x.docx").write_bytes(b"PK")
    proc = run("ingest", "--uri", str(tmp_path / "n.db"), str(tmp_path / "bad"), "--json")
    assert_one_line_error(proc, 1, "nothing ingested")
    report = last_json(proc)
    assert report["files"] == 0 and len(report["skipped"]) == 2 and "error" in report


def test_unreachable_uri_fails_within_seconds(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    proc = run("search", "--uri", f"http://127.0.0.1:{port}", "--json", "anything")
    assert (
        time.perf_counter() - start < 30
    )  # interpreter start-up included; the TCP check itself is 3 s at most
    assert_one_line_error(proc, 2, f"cannot reach Milvus at http://127.0.0.1:{port}")
    assert "error" in last_json(proc)


def test_bad_input_is_one_line(tmp_path: Path, retriever, lite_uri: str):
    proc = run("search", "--uri", str(tmp_path / "f.db"), "--filter", "source in ['a'] or 1==1", "q")
    assert_one_line_error(proc, 2, "cannot read filter")
    proc = run("search", "--uri", str(tmp_path / "f.db"), "--collection", "missing", "q")
    assert_one_line_error(proc, 2, "'missing' does not exist")
    proc = run("ingest", "--set", "chunk_overlap=500", "x")  # config problems: one line each, no traceback
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: config: 1 problem(s):") and "chunk_overlap (500)" in proc.stderr
    # The session retriever holds this Milvus Lite file: a second process is told why it cannot open it.
    proc = run("collections", "--uri", lite_uri)
    assert_one_line_error(proc, 2, "one process")


def test_validate_shipped_config():
    proc = run("validate", "--config", "retrieval/configs/local.yaml", "--set", "chunk_tokens=128", "--json")
    assert proc.returncode == 0, proc.stderr
    out = last_json(proc)
    assert out["valid"] and out["config"]["chunk_tokens"] == 128
