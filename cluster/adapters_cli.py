"""`python -m cluster adapters ...`: see and steer the adapter store (versions, the served pointer, retention).

python -m cluster adapters list [--store URI] [--json]             # current version of each adapter (+ problems)
python -m cluster adapters versions NAME [--store URI] [--json]    # every version with its metadata
python -m cluster adapters rollback NAME@N [--store URI] [--json]  # serve version N (moves the pointer)
python -m cluster adapters prune NAME --keep K [--store URI]       # delete all but the newest K (never the served)

Servers pick up a rollback on their next request (`adapters.pointer_ttl_s`, default 0).
"""

from __future__ import annotations

import argparse
from typing import Any

from core import storage
from core.adapter_store import AdapterInfo, AdapterStore
from core.cli import add_json_flag, emit


def _card(info: AdapterInfo) -> dict[str, Any]:
    meta = info.metadata
    return {
        "name": info.name,
        "version": info.version,
        "ref": info.ref,
        "uri": info.uri,
        "base_model": info.base_model,
        "base_fingerprint": info.base_fingerprint,
        "published_at": meta.get("published_at"),
        "run": meta.get("run"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster adapters", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--store", default=None, help="adapter store root (path or s3://); default: data_dir()/adapters"
    )
    add_json_flag(parser)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="current version of each adapter")
    p = sub.add_parser("versions", help="every version of one adapter")
    p.add_argument("name")
    p = sub.add_parser("rollback", help="serve an existing version: NAME@N")
    p.add_argument("ref")
    p = sub.add_parser("prune", help="delete old versions")
    p.add_argument("name")
    p.add_argument("--keep", type=int, required=True, help="versions to keep (the served one always stays)")
    for child in sub.choices.values():  # accept the common flags after the subcommand too
        child.add_argument("--store", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        child.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    store = AdapterStore(args.store or storage.data_dir() / "adapters")
    if args.cmd == "list":
        adapters, problems = store.list_with_problems()
        result: Any = {"store": store.root, "adapters": [_card(a) for a in adapters], "problems": problems}
        emit(result, args.json, _human_list)
    elif args.cmd == "versions":
        current = store.current(args.name)
        cards = [
            {**_card(store.get(f"{args.name}@{v}")), "current": v == current}
            for v in store.versions(args.name)
        ]
        emit(
            cards,
            args.json,
            lambda cs: "\n".join(_line(c) + ("  <- served" if c["current"] else "") for c in cs),
        )
    elif args.cmd == "rollback":
        emit(_card(store.set_current(args.ref)), args.json, lambda c: f"now serving {c['ref']}")
    else:
        removed = store.prune(args.name, args.keep)
        result = {"name": args.name, "removed": removed, "kept": store.versions(args.name)}
        emit(result, args.json, lambda r: f"removed versions {r['removed'] or 'none'}; kept {r['kept']}")
    return 0


def _line(card: dict[str, Any]) -> str:
    return f"{card['ref']:<32} base {card['base_model'] or '?'}  run {card['run'] or '-'}"


def _human_list(result: dict[str, Any]) -> str:
    lines = [_line(c) for c in result["adapters"]] or [f"no adapters in {result['store']}"]
    lines += [f"skipped {name}: {why}" for name, why in result["problems"].items()]
    return "\n".join(lines)
