"""`python -m retrieval {ingest,search,delete,collections,validate} ...` (the commands live in retrieval/cli.py)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # pymilvus keepalive chatter against Milvus Lite

from core.cli import dispatch  # noqa: E402

SUBCOMMANDS = {
    name: f"retrieval.cli:{name}_main" for name in ("ingest", "search", "delete", "collections", "validate")
}


def main(argv: list[str] | None = None) -> int:
    return dispatch("python -m retrieval", SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
