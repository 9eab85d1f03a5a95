"""`python -m evaluation --config evaluation/configs/local.yaml [key=value ...] [--json]` (see evaluation/runner.py)."""

from __future__ import annotations

import sys

from core.cli import run_cli
from evaluation.runner import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
