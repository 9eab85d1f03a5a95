"""RAFT-style training rows: chat rows rewritten with the retrieved context the adapter will see at serving.

Fine-tuning and RAG are trained together: most rows carry the top-k hybrid hits of their question in the exact
layout serving uses (`retrieval.context.with_context_chat`), with the gold document's chunk among them so the
model learns to read and cite it. A share of context rows has every gold chunk taken out (the answer stays),
so the model also learns the fact itself and is not lost when retrieval misses. A share stays plain (no
context, no system message), like a serving request without RAG. All choices are seeded, so a re-run on an
unchanged index writes the same file (resumed runs see the same data).

    python -m training raft-data --data examples/instructions.jsonl --collection helix_docs --out raft.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import storage
from core.cli import add_json_flag, emit, log
from core.errors import UserError
from core.paths import resolve_data_path
from retrieval.context import DEFAULT_SYSTEM_PROMPT, Placement, with_context_chat

if TYPE_CHECKING:
    from retrieval.retriever import Hit, Retriever
    from training.config import DataSettings, RaftSettings

KINDS = ("plain", "with_gold", "no_answer", "gold_missing_from_index", "no_source")
OUT_NAME = "raft-data.jsonl"


def _check_args(top_k: int, no_answer_fraction: float, plain_fraction: float) -> None:
    if not isinstance(top_k, int) or not 1 <= top_k <= 100:
        raise UserError(f"top_k must be a whole number from 1 to 100, got {top_k!r}")
    for name, value in (("no_answer_fraction", no_answer_fraction), ("plain_fraction", plain_fraction)):
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise UserError(f"{name} must be a number from 0 to 1, got {value!r}")


def split_row(row: dict[str, Any], where: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    """(conversation up to the last user turn, without system messages; the final assistant answer).

    Serving retrieves with the last user message and keeps the earlier turns, so training does the same.
    """
    msgs = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(msgs, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in msgs
    ):
        raise UserError(f"{where}: needs 'messages', a list of {{role, content}} objects (format messages)")
    answer_at = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=-1)
    user_at = max((i for i, m in enumerate(msgs[:answer_at]) if m["role"] == "user"), default=-1)
    if user_at < 0 or not msgs[user_at]["content"].strip() or not msgs[answer_at]["content"].strip():
        raise UserError(f"{where}: needs a non-empty user message followed by a non-empty assistant answer")
    convo = [
        {"role": m["role"], "content": m["content"]} for m in msgs[: user_at + 1] if m["role"] != "system"
    ]
    return convo, {"role": "assistant", "content": msgs[answer_at]["content"]}


def _with_gold(
    hits: list[Hit], retriever: Retriever, query: str, collection: str, gold: str, top_k: int
) -> list[Hit]:
    """The hits, with the gold source's best chunk in place of the lowest hit if retrieval missed it.

    A gold chunk absent from the top k ranks below every hit, so the last slot is where it would rank.
    """
    if any(h.source == gold for h in hits):
        return hits
    best = retriever.search(query, 1, filter=f"source={gold}", mode="hybrid", collection=collection)
    return [*hits[: top_k - 1], *best] if len(hits) >= top_k else [*hits, *best]


def _without_gold(
    hits: list[Hit], retriever: Retriever, query: str, collection: str, gold: str, top_k: int
) -> list[Hit]:
    """The hits minus every gold chunk, topped up with the next non-gold hits (order kept)."""
    kept = [h for h in hits if h.source != gold]
    if len(kept) < top_k:
        seen = {h.id for h in kept}
        more = retriever.search(query, top_k, filter=f"source!={gold}", mode="hybrid", collection=collection)
        kept += [h for h in more if h.id not in seen][: top_k - len(kept)]
    return kept


def build_rows(
    rows: list[dict[str, Any]],
    retriever: Retriever,
    collection: str,
    top_k: int = 4,
    no_answer_fraction: float = 0.2,
    plain_fraction: float = 0.3,
    seed: int = 0,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    placement: Placement = "system",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """RAFT rows (input order kept) and a report counting each kind of row.

    Exactly round(plain_fraction x rows) rows are plain; of the context rows whose gold source is indexed,
    round(no_answer_fraction x those) lose their gold chunks. Rows without `source` take the top k as they come;
    rows whose gold source is not in the collection also do, and are counted as gold_missing_from_index.
    `gold_added` counts with-gold rows whose gold chunk retrieval missed and this function put in.
    Every output row keeps its other fields and gains `raft` (its kind).
    """
    _check_args(top_k, no_answer_fraction, plain_fraction)
    parsed = [split_row(r, f"row {i + 1}") for i, r in enumerate(rows)]
    golds: list[str | None] = []
    for i, r in enumerate(rows):
        gold = r.get("source")
        if gold is not None and (not isinstance(gold, str) or not gold.strip()):
            raise UserError(f"row {i + 1}: 'source' must be a non-empty string (the document's stored path)")
        golds.append(gold)
    retriever.store.require(collection)  # an unknown collection is one clear error before any work
    wanted = sorted({g for g in golds if g})
    indexed = set(retriever.store.ids_by_source(collection, wanted)) if wanted else set()

    rng = random.Random(seed)
    order = rng.sample(range(len(rows)), len(rows))
    n_plain = round(plain_fraction * len(rows))
    plain = set(order[:n_plain])
    eligible = [i for i in order[n_plain:] if golds[i] in indexed]
    no_answer = set(eligible[: round(no_answer_fraction * len(eligible))])

    report: dict[str, Any] = {"rows": len(rows), **dict.fromkeys(KINDS, 0), "gold_added": 0}
    out: list[dict[str, Any]] = []
    for i, (row, (convo, answer), gold) in enumerate(zip(rows, parsed, golds, strict=True)):
        if i in plain:
            kind, messages = "plain", [*convo, answer]
        else:
            query = convo[-1]["content"]
            hits = retriever.search(query, top_k, mode="hybrid", collection=collection)
            if gold is None:
                kind = "no_source"
            elif gold not in indexed:
                kind = "gold_missing_from_index"
            elif i in no_answer:
                kind, hits = "no_answer", _without_gold(hits, retriever, query, collection, gold, top_k)
            else:
                report["gold_added"] += not any(h.source == gold for h in hits)
                kind, hits = "with_gold", _with_gold(hits, retriever, query, collection, gold, top_k)
            messages = [
                *with_context_chat(convo, [h.to_dict() for h in hits], system_prompt, placement),
                answer,
            ]
        report[kind] += 1
        out.append({**row, "messages": messages, "raft": kind})
    report["missing_sources"] = sorted(set(wanted) - indexed)
    return out, report


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Rows of a jsonl file (local or object storage); UserError naming the line for a non-object line."""
    where = path if storage.is_remote(path) else str(Path(path).expanduser())
    if not storage.exists(where) or Path(where).is_dir():
        raise UserError(f"data file not found: {path}")
    rows = []
    for n, line in enumerate(storage.read_text(where).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise UserError(f"{path}:{n}: not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{n}: each line must be a JSON object")
        rows.append(obj)
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Atomically (temp file + os.replace): a crash never leaves a half-written training file."""
    storage.write_text_atomic(str(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def build_file(data: str, out: str | Path, s: RaftSettings) -> dict[str, Any]:
    """Read `data`, build the RAFT rows against the configured collection, write `out`; returns the report."""
    from retrieval import RetrievalConfig, Retriever

    rows = read_jsonl(data)
    uri = resolve_data_path(s.uri)
    retriever = Retriever(RetrievalConfig.from_dict({"uri": uri, "collection": s.collection}, source="raft"))
    try:  # closing releases Milvus Lite's file lock before anything else (serving, ingest) opens the file
        built, report = build_rows(
            rows,
            retriever,
            s.collection,
            top_k=s.top_k,
            no_answer_fraction=s.no_answer_fraction,
            plain_fraction=s.plain_fraction,
            seed=s.seed,
            system_prompt=s.system_prompt,
            placement=s.placement,
        )
    finally:
        retriever.close()
    write_jsonl(out, built)
    if missing := report["missing_sources"]:
        log(f"warning: {len(missing)} gold source(s) not in {s.collection}: {', '.join(missing[:5])}")
    return {**report, "collection": s.collection, "uri": uri, "data": data, "out": str(out)}


def prepare(data: DataSettings, run_dir: Path) -> tuple[DataSettings, dict[str, Any]]:
    """The launch hook: write the RAFT file into the run folder and return data settings that train on it."""
    assert data.rag_context is not None
    out = run_dir / OUT_NAME
    rc = data.rag_context
    log(f"raft: building context rows from {data.path} with collection {rc.collection}")
    # In a child process: Milvus Lite keeps its file locked for the life of the process that opened it, and the
    # driver (the demo, a notebook) may start the serving app on the same file right after training.
    cmd = [sys.executable, "-m", "training", "raft-data", "--data", str(data.path), "--collection", rc.collection,
           "--uri", rc.uri, "--top-k", str(rc.top_k), "--no-answer-fraction", str(rc.no_answer_fraction),
           "--plain-fraction", str(rc.plain_fraction), "--seed", str(rc.seed), "--system-prompt", rc.system_prompt,
           "--placement", rc.placement, "--out", str(out), "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=storage.REPO_ROOT)
    lines = proc.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if proc.returncode != 0 or "error" in report:
        reason = report.get("error") or (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise UserError(f"data.rag_context: building the RAFT rows failed: {reason}", proc.returncode or 1)
    log(_human(report))
    return data.model_copy(update={"path": str(out)}), report


def _human(r: dict[str, Any]) -> str:
    return (
        f"raft: {r['rows']} rows -> {r['out']}: {r['plain']} plain, {r['with_gold']} with gold, "
        f"{r['no_answer']} no-answer, {r['no_source']} without source, "
        f"{r['gold_missing_from_index']} with gold missing from the index "
        f"(gold chunk added to {r['gold_added']} rows retrieval missed it in)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training raft-data",
        description="Write RAFT-style chat rows: each question with its retrieved context (serving's layout).",
    )
    p.add_argument("--data", required=True, help="chat jsonl (format messages; a 'source' field per row)")
    p.add_argument("--collection", required=True, help="Milvus collection to retrieve from")
    p.add_argument(
        "--uri", default="data:milvus.db", help="Milvus Lite file or http://host:19530 ('data:x' allowed)"
    )
    p.add_argument("--top-k", type=int, default=4, help="chunks per context (default 4)")
    p.add_argument(
        "--no-answer-fraction", type=float, default=0.2, help="context rows without the gold chunk"
    )
    p.add_argument("--plain-fraction", type=float, default=0.3, help="rows without context or system message")
    p.add_argument("--seed", type=int, default=0, help="seed for choosing plain and no-answer rows")
    p.add_argument("--system-prompt", default=DEFAULT_SYSTEM_PROMPT, help="instruction before the context")
    p.add_argument(
        "--placement",
        choices=("system", "user"),
        default="system",
        help="where the context goes (= serving's)",
    )
    p.add_argument("--out", required=True, help="output jsonl (written atomically)")
    add_json_flag(p)
    args = p.parse_args(argv)
    _check_args(args.top_k, args.no_answer_fraction, args.plain_fraction)  # before loading anything
    from training.config import RaftSettings

    settings = RaftSettings.from_dict(
        {
            "enabled": True,
            "collection": args.collection,
            "uri": args.uri,
            "top_k": args.top_k,
            "no_answer_fraction": args.no_answer_fraction,
            "plain_fraction": args.plain_fraction,
            "seed": args.seed,
            "system_prompt": args.system_prompt,
            "placement": args.placement,
        },
        source="command line",
    )
    emit(build_file(args.data, args.out, settings), args.json, _human)
    return 0
