"""`python -m training ...`: fine-tune (default), or a subcommand.

python -m training --config FILE [key.sub=value ...] [--output-dir DIR] [--json]   # fine-tune
python -m training validate --config FILE [key=value ...]                         # check a config only
python -m training plan --model NAME --method qlora --gpus 2 --gpu-memory-gb 80   # memory planner
python -m training merge --adapter NAME_OR_PATH --out DIR                          # merge LoRA into base
python -m training tiny --out DIR                                                  # build the tiny model
python -m training import-gguf [FILE] --out DIR                                    # import a GGUF (default: SmolLM2)
python -m training raft-data --data FILE --collection NAME --out FILE [--json]      # RAFT rows with retrieved context
"""

from __future__ import annotations

import sys

from core.cli import dispatch

SUBCOMMANDS = {
    "validate": "training.launch:validate_main",
    "plan": "training.planner.cli:main",
    "merge": "training.merge:main",
    "tiny": "training.tiny:main",
    "import-gguf": "training.gguf_import:main",
    "raft-data": "training.raft:main",
}


def main(argv: list[str] | None = None) -> int:
    return dispatch("python -m training", SUBCOMMANDS, argv, default="training.launch:main")


if __name__ == "__main__":
    sys.exit(main())
