"""CLI plumbing shared by every `python -m <package>`: user errors without tracebacks, and `--json` output.

Contract for scripts: with `--json`, the last line on stdout is exactly one JSON object or array.
Human-readable progress goes to stderr so it never breaks that line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from cluster.errors import UserError


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document as the last stdout line")


def emit(result: Any, as_json: bool, human: Callable[[Any], str] | None = None) -> None:
    """Print a result: a JSON line for scripts, or a human rendering."""
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        text = human(result) if human else json.dumps(result, indent=2, default=str)
        sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a CLI main; turn UserError into `error: ...` on stderr (and a JSON error line with --json)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(args)
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        if "--json" in args:
            sys.stdout.write(json.dumps({"error": str(exc)}) + "\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


def log(msg: str) -> None:
    """Progress for humans: stderr, so `--json` stdout stays clean."""
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
