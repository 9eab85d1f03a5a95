"""`python -m retrieval {ingest,search,delete,collections,validate}`: the command line over `Retriever`."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli import add_json_flag, emit, log
from core.errors import UserError
from retrieval.config import RetrievalConfig
from retrieval.retriever import MODES, Hit, IngestReport, Retriever


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="RetrievalConfig YAML (e.g. retrieval/configs/local.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set chunk_tokens=128")  # fmt: skip
    p.add_argument(
        "--uri", help="Milvus Lite file (*.db) or http://host:19530 (default: <data dir>/milvus.db)"
    )
    p.add_argument("--token", help="Milvus token for a server (user:password or API key)")
    p.add_argument("--collection", help="collection name (default: docs)")
    p.add_argument("--embedder", help="sentence-transformers model path (default: bundled all-MiniLM-L6-v2)")
    add_json_flag(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retrieval", description="Ingest documents into Milvus and search them."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ingest", help="load, chunk, embed and upsert files and folders (.md .txt .html .pdf)")
    _common(p)
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument(
        "--ray", action="store_true", help="parse and embed on Ray Data (local Ray or RAY_ADDRESS)"
    )
    p.add_argument("--base", help="store sources relative to this folder (default: current directory)")
    p = sub.add_parser("search", help="search a collection (hybrid dense + BM25 by default)")
    _common(p)
    p.add_argument("query", nargs="+", metavar="QUERY")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--mode", choices=MODES, default="hybrid")
    p.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help="FIELD=VALUE, FIELD!=VALUE or 'FIELD like PATTERN' on source/title/chunk (repeatable, AND-ed)")  # fmt: skip
    p = sub.add_parser("delete", help="remove every chunk of one source")
    _common(p)
    p.add_argument("--source", required=True, help="the source as stored (or a path to the file)")
    p = sub.add_parser("collections", help="list collections")
    _common(p)
    p = sub.add_parser("validate", help="check a config file (and overrides) without touching Milvus")
    _common(p)
    return parser


def load_config(args: argparse.Namespace) -> RetrievalConfig:
    cfg = (
        RetrievalConfig.from_file(args.config, args.overrides)
        if args.config
        else RetrievalConfig.from_dict({}, args.overrides)
    )
    flags = {k: getattr(args, k, None) for k in ("uri", "token", "collection", "embedder")}
    if getattr(args, "base", None):
        flags["source_root"] = args.base
    flags = {k: v for k, v in flags.items() if v is not None}
    return RetrievalConfig.from_dict({**cfg.model_dump(), **flags}, source="command line") if flags else cfg


def _human_report(r: dict[str, Any]) -> str:
    lines = [
        f"{r['collection']}: {r['files']} file(s) ingested, {r['chunks']} chunk(s) written, "
        f"{r['unchanged']} unchanged, {r['deleted']} stale chunk(s) removed in {r['seconds']} s"
    ]
    lines += [f"  skipped {p['source']}: {p['reason']}" for p in r["skipped"]]
    lines += [f"  error   {p['source']}: {p['reason']}" for p in r["errors"]]
    return "\n".join(lines)


def _human_hits(hits: list[dict[str, Any]]) -> str:
    if not hits:
        return "no hits"
    out = []
    for i, h in enumerate(hits, 1):
        snippet = " ".join(h["text"].split())[:160]
        out.append(f"{i}. [{h['score']:.4f}] {h['source']}#{h['chunk']} ({h['title']})\n   {snippet}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args)
    if args.command == "validate":
        emit(
            {"valid": True, "config": cfg.model_dump(mode="json", exclude={"token"})},
            args.json,
            lambda r: "config ok\n" + cfg.to_yaml(),
        )
        return 0
    retriever = Retriever(cfg)
    try:
        if args.command == "ingest":
            report: IngestReport = retriever.ingest_paths(args.paths, ray=args.ray)
            if not report.ingested_anything:
                n = len(report["skipped"]) + len(report["errors"])
                report["error"] = f"nothing ingested: all {n} file(s) were skipped or failed (listed above)"
            emit(dict(report), args.json, _human_report)
            if "error" in report:
                log(f"error: {report['error']}")
                return 1
            return 0
        if args.command == "search":
            if args.top_k < 1:
                raise UserError("--top-k must be at least 1")
            hits: list[Hit] = retriever.search(
                " ".join(args.query), args.top_k, args.filter or None, args.mode
            )
            emit([h.to_dict() for h in hits], args.json, _human_hits)
            return 0
        if args.command == "delete":
            n = retriever.delete_source(args.source)
            emit({"collection": cfg.collection, "source": args.source, "deleted": n}, args.json,
                 lambda r: f"deleted {r['deleted']} chunk(s) of {r['source']}")  # fmt: skip
            return 0
        emit(retriever.collections(), args.json, lambda r: "\n".join(r) or "(no collections)")
        return 0
    finally:
        retriever.close()
