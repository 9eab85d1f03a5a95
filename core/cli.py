"""CLI plumbing shared by every `python -m <package>`: one error boundary, and `--json` output.

The boundary: a user error (`UserError`) prints `error: ...`; any other failure (engine, Ray/Serve, Milvus,
storage, or a bug of ours) prints one line saying what failed and where the full traceback was written
(`data_dir()/logs/`), never a traceback on the terminal. Exit codes: 2 user error, 1 failure, 130 interrupted.

Contract for scripts: with `--json`, the last line on stdout is exactly one JSON object or array (an error is
`{"error": ..., "kind"?, "log"?}`). Human-readable progress goes to stderr so it never breaks that line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import UserError


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
    # pymilvus logs every failed RPC at ERROR with a full traceback before raising; the exception reaches this
    # boundary anyway, so on a terminal that log would only be the traceback a user must not see. A filter, not
    # a level: pymilvus' import-time dictConfig resets the levels of its child loggers, but not their filters.
    logging.getLogger("pymilvus.decorators").addFilter(lambda record: record.levelno > logging.ERROR)
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
    except SystemExit as exc:  # argparse: usage already on stderr; --json still ends with one JSON line
        if exc.code not in (0, None) and "--json" in args:
            sys.stdout.write(json.dumps({"error": "invalid command line (usage on stderr)"}) + "\n")
        raise
    except Exception as exc:  # noqa: BLE001 - the boundary: one line here, the traceback in a log file
        kind = failure_kind(exc)
        log_path = write_traceback(exc)
        # A remote task's error (Ray's RayTaskError) carries the task's own exception as `cause`: say that one.
        cause = getattr(exc, "cause", None)
        shown = cause if isinstance(cause, BaseException) else exc
        first = (str(shown).strip().splitlines() or [""])[0][:300]
        hint = " (a bug: please report it with the log)" if kind == "internal error" else ""
        message = f"{kind} failed: {type(shown).__name__}: {first}{hint}; full traceback in {log_path}"
        sys.stderr.write(f"error: {message}\n")
        if "--json" in args:
            sys.stdout.write(json.dumps({"error": message, "kind": kind, "log": str(log_path)}) + "\n")
        return 1


# Where a failure happened, judged by the deepest frame in a known library (first match wins).
_FAILURE_KINDS = (
    ("/ray/serve/", "Ray Serve"),
    ("/ray/", "Ray"),
    ("/pymilvus/", "Milvus"),
    ("/milvus_lite/", "Milvus"),
    ("/vllm/", "vLLM engine"),
    ("/deepspeed/", "DeepSpeed"),
    ("/botocore/", "object storage"),
    ("/pyarrow/", "storage"),
    ("/torch/", "torch"),
)


def failure_kind(exc: BaseException) -> str:
    """'Ray Serve', 'Milvus', 'storage', ...: what failed, for the one line a user reads."""
    module = type(exc).__module__
    if module.startswith(("pymilvus", "milvus_lite")):
        return "Milvus"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        for marker, kind in _FAILURE_KINDS:
            if marker in frame.filename.replace(os.sep, "/"):
                return kind
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"file system{where}"
    return "internal error"


def write_traceback(exc: BaseException) -> Path:
    """Write the full traceback to data_dir()/logs (or the temp folder if that is not writable)."""
    script = Path(sys.argv[0] if sys.argv and not sys.argv[0].startswith("-") else "cli")
    prog = script.parent.name if script.stem == "__main__" else script.stem  # python -m cluster -> cluster
    name = f"{prog}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        from core.storage import data_dir

        folder = data_dir() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir())
    for path in (folder / name, Path(tempfile.gettempdir()) / name):
        try:
            path.write_text(text)
            return path
        except OSError:
            continue
    return Path("(traceback not written: no writable folder)")


def dispatch(
    prog: str, subcommands: dict[str, str], argv: list[str] | None = None, default: str | None = None
) -> int:
    """`python -m <package> <subcommand> ...`: run "module:function" for the subcommand through `run_cli`.

    With `default`, arguments that do not start with a known subcommand go to it (`python -m training --config`);
    without, they are a usage error naming the subcommands."""
    import importlib

    args = list(sys.argv[1:] if argv is None else argv)
    target = subcommands.get(args[0]) if args else None
    rest = args[1:]
    if target is None and args[:1] in (["-h"], ["--help"]):
        sys.stdout.write(f"usage: {prog} {{{','.join(subcommands)}}} ... ('{prog} COMMAND --help' for one)\n")
        if default is None:
            return 0
        sys.stdout.write(f"without a command, {prog} runs:\n")
        sys.stdout.flush()
    if target is None and default is not None:
        target, rest = default, args
    if target is None:

        def usage(_: list[str] | None) -> int:
            got = repr(args[0]) if args else "nothing"
            raise UserError(f"usage: {prog} {{{','.join(subcommands)}}} ... (got {got})")

        return run_cli(usage, args)
    module, func = target.split(":")

    def run(argv: list[str] | None) -> int:  # imported inside the boundary: an ImportError is one line too
        return getattr(importlib.import_module(module), func)(argv)

    return run_cli(run, rest)


def log(msg: str) -> None:
    """Progress for humans: stderr, so `--json` stdout stays clean."""
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
