"""`python -m serving ...`: run the app locally (default) or check a config.

python -m serving [run] --config serving/configs/local.yaml [--port 8000] [--set router.max_in_flight=32] [--json]
python -m serving validate --config serving/configs/gpu-cluster.yaml [--json]
"""

from __future__ import annotations

import sys

from core.cli import dispatch

SUBCOMMANDS = {"run": "serving.cli:run_main", "validate": "serving.cli:validate_main"}


def main(argv: list[str] | None = None) -> int:
    return dispatch("python -m serving", SUBCOMMANDS, argv, default="serving.cli:run_main")


if __name__ == "__main__":
    sys.exit(main())
