"""Entry point: `python -m retrieval ...` (see retrieval/cli.py)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # pymilvus keepalive chatter against Milvus Lite

from core.cli import run_cli  # noqa: E402
from retrieval.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))
