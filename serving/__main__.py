"""`python -m serving --config FILE` runs the app locally until Ctrl-C; `python -m serving validate --config FILE`.

python -m serving --config serving/configs/local.yaml [--port 8000] [--set router.max_in_flight=32]
python -m serving validate --config serving/configs/gpu-cluster.yaml [--json]
"""

from __future__ import annotations

import argparse
import signal
import threading

from core.cli import add_json_flag, emit, log, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving", description="Serve the LLM, adapters and RAG router."
    )
    parser.add_argument("command", nargs="?", choices=["run", "validate"], default="run")
    parser.add_argument("--config", required=True, help="ServeConfig YAML file")
    parser.add_argument(
        "--port", type=int, default=None, help="HTTP port (default: router.port from the config)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    add_json_flag(parser)
    args = parser.parse_args(argv)

    from serving.app import load_config, start, stop

    cfg = load_config(args.config, args.set)
    if args.command == "validate":
        emit(
            {
                "valid": True,
                "config": cfg.model_dump(
                    mode="json", exclude={"router": {"api_keys"}, "retriever": {"token"}}
                ),
            },
            args.json,
            lambda _: f"{args.config}: valid",
        )
        return 0
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


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
