"""Replacing a document is atomic for readers: an ingest process killed between writing the new chunks and
committing them leaves the old version whole and the new one invisible; the next ingest finishes the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.faults import FAULT_ENV

REPO = Path(__file__).resolve().parents[2]


def manual(pressure: int, steps: int) -> str:
    body = "\n".join(
        f"## Step {i}\nStep {i} of the brake service: hydraulic brake pressure must read {pressure} bar. " * 3
        for i in range(steps)
    )
    return f"# Brake manual\n{body}\n"


def ingest(docs: Path, db: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retrieval", "ingest", "--uri", str(db), "--collection", "kb",
         "--base", str(docs.parent), str(docs), "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env},
    )  # fmt: skip


# Milvus Lite keeps a file locked for the life of the process that opened it: every reader is a child process.
PROBE = """
import json, sys
from retrieval import RetrievalConfig, Retriever
r = Retriever(RetrievalConfig(uri=sys.argv[1], collection="kb", source_root=sys.argv[2]))
hits = r.search("hydraulic brake pressure bar", top_k=50)
out = {"count": r.store.count("kb"), "texts": [h.text for h in hits]}
if sys.argv[3]:
    out["deleted"] = r.delete_source(sys.argv[3])
    out["after_delete"] = [h.text for h in r.search("brake", top_k=5)]
print(json.dumps(out))
"""


def probe(db: Path, delete: str = "") -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(db), str(db.parent), delete],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_kill_between_upsert_and_commit_keeps_the_old_version_whole(tmp_path: Path) -> None:
    docs, db = tmp_path / "docs", tmp_path / "kb.db"
    docs.mkdir()
    (docs / "brake.md").write_text(manual(180, 6))
    first = ingest(docs, db)
    assert first.returncode == 0, first.stderr[-2000:]
    (docs / "brake.md").write_text(manual(240, 9))  # more chunks, different numbers: a mix would show
    killed = ingest(docs, db, **{FAULT_ENV: "after-upsert"})
    assert killed.returncode == -9, killed.stderr[
        -2000:
    ]  # a real SIGKILL, right after the new chunks went in

    state = probe(db)
    assert (
        state["count"] > len(state["texts"]) > 0
    )  # the new version's rows are stored (killed after them) ...
    assert all("180 bar" in t for t in state["texts"]), state["texts"]  # ... but only the old version shows
    old_chunks = len(state["texts"])

    again = ingest(docs, db)
    assert again.returncode == 0, again.stderr[-2000:]
    state = probe(db, delete="docs/brake.md")
    assert state["texts"] and all("240 bar" in t for t in state["texts"])
    assert len(state["texts"]) > old_chunks and state["count"] == len(
        state["texts"]
    )  # old rows, leftovers gone
    assert state["deleted"] == len(state["texts"]) and state["after_delete"] == []
