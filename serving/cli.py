"""`python -m serving run|validate`: the two commands behind the serving entry point (see serving/__main__.py)."""

from __future__ import annotations

import argparse
import signal
import threading

from core.cli import add_json_flag, emit, log


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m serving {command}", description=description)
    parser.add_argument("--config", required=True, help="ServeConfig YAML file")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    add_json_flag(parser)
    return parser


def validate_main(argv: list[str] | None = None) -> int:
    """Check a ServeConfig file (and overrides) without starting anything."""
    args = _parser("validate", validate_main.__doc__ or "").parse_args(argv)
    from serving.app import load_config

    cfg = load_config(args.config, args.set)
    emit(
        {
            "valid": True,
            "config": cfg.model_dump(mode="json", exclude={"router": {"api_keys"}, "retriever": {"token"}}),
        },
        args.json,
        lambda _: f"{args.config}: valid",
    )
    return 0


def run_main(argv: list[str] | None = None) -> int:
    """Serve the LLM, adapters and RAG router on this machine until Ctrl-C or SIGTERM."""
    parser = _parser("run", run_main.__doc__ or "")
    parser.add_argument(
        "--port", type=int, default=None, help="HTTP port (default: router.port from the config)"
    )
    args = parser.parse_args(argv)
    from serving.app import load_config, start, stop

    cfg = load_config(args.config, args.set)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:  # start inside: a failed health wait or Ctrl-C during start-up still stops what was started
        url = start(cfg, args.port)
        log(f"serving {cfg.model.served_name()} at {url}/v1 (Ctrl-C stops)")
        emit({"url": url, "app": cfg.app_name}, args.json, lambda r: f"ready: {r['url']}")
        while not stopped.wait(1):
            pass
    except KeyboardInterrupt:
        log("stopping")
    finally:
        stop()
    return 0
