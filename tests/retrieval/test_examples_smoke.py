"""Smoke test on the shipped example corpus: its own questions find their own documents."""

from __future__ import annotations

import json
from pathlib import Path

from retrieval import Retriever

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_questions_find_their_documents(retriever: Retriever):
    qa_path = EXAMPLES / "qa.jsonl"
    assert qa_path.is_file(), "examples/qa.jsonl ships with the repository; a rename must update this test"
    qa = [json.loads(line) for line in qa_path.read_text().splitlines() if line.strip()]
    sources = list(dict.fromkeys(q["source"] for q in qa))[:3]  # three documents keep this quick
    r = Retriever(
        retriever.cfg.model_copy(update={"source_root": str(EXAMPLES)}), retriever.embedder, retriever.store
    )
    report = r.ingest_paths([str(EXAMPLES / s) for s in sources], collection="examples_smoke")
    assert report["files"] == 3 and not report["errors"] and not report["skipped"]
    questions = [q for q in qa if q["source"] in sources]
    found = sum(
        q["source"] in [h.source for h in r.search(q["question"], top_k=1, collection="examples_smoke")]
        for q in questions
    )
    assert found / len(questions) >= 0.8, f"{found}/{len(questions)} questions found their document at rank 1"
