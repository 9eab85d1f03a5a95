"""`python -m retrieval {ingest,search,delete,collections,validate}`: one function per command over `Retriever`."""

from __future__ import annotations

import argparse
from contextlib import closing
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


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m retrieval {command}", description=description)
    _common(parser)
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


def validate_main(argv: list[str] | None = None) -> int:
    """Check a config file (and overrides) without touching Milvus."""
    args = _parser("validate", validate_main.__doc__ or "").parse_args(argv)
    cfg = load_config(args)
    emit(
        {"valid": True, "config": cfg.model_dump(mode="json", exclude={"token"})},
        args.json,
        lambda r: "config ok\n" + cfg.to_yaml(),
    )
    return 0


def ingest_main(argv: list[str] | None = None) -> int:
    """Load, chunk, embed and upsert files and folders (.md .txt .html .pdf)."""
    p = _parser("ingest", ingest_main.__doc__ or "")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument(
        "--ray", action="store_true", help="parse and embed on Ray Data (local Ray or RAY_ADDRESS)"
    )
    p.add_argument("--base", help="store sources relative to this folder (default: current directory)")
    args = p.parse_args(argv)
    with closing(Retriever(load_config(args))) as retriever:
        report: IngestReport = retriever.ingest_paths(args.paths, ray=args.ray)
    if not report.ingested_anything:
        n = len(report["skipped"]) + len(report["errors"])
        report["error"] = f"nothing ingested: all {n} file(s) were skipped or failed (listed above)"
    emit(dict(report), args.json, _human_report)
    if "error" in report:
        log(f"error: {report['error']}")
        return 1
    return 0


def search_main(argv: list[str] | None = None) -> int:
    """Search a collection (hybrid dense + BM25 by default)."""
    p = _parser("search", search_main.__doc__ or "")
    p.add_argument("query", nargs="+", metavar="QUERY")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--mode", choices=MODES, default="hybrid")
    p.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help="FIELD=VALUE, FIELD!=VALUE or 'FIELD like PATTERN' on source/title/chunk (repeatable, AND-ed)")  # fmt: skip
    args = p.parse_args(argv)
    if args.top_k < 1:
        raise UserError("--top-k must be at least 1")
    with closing(Retriever(load_config(args))) as retriever:
        hits: list[Hit] = retriever.search(" ".join(args.query), args.top_k, args.filter or None, args.mode)
    emit([h.to_dict() for h in hits], args.json, _human_hits)
    return 0


def delete_main(argv: list[str] | None = None) -> int:
    """Remove every chunk of one source."""
    p = _parser("delete", delete_main.__doc__ or "")
    p.add_argument("--source", required=True, help="the source as stored (or a path to the file)")
    args = p.parse_args(argv)
    cfg = load_config(args)
    with closing(Retriever(cfg)) as retriever:
        n = retriever.delete_source(args.source)
    emit({"collection": cfg.collection, "source": args.source, "deleted": n}, args.json,
         lambda r: f"deleted {r['deleted']} chunk(s) of {r['source']}")  # fmt: skip
    return 0


def collections_main(argv: list[str] | None = None) -> int:
    """List the collections of a Milvus (Lite file or server)."""
    args = _parser("collections", collections_main.__doc__ or "").parse_args(argv)
    with closing(Retriever(load_config(args))) as retriever:
        names = retriever.collections()
    emit(names, args.json, lambda r: "\n".join(r) or "(no collections)")
    return 0
