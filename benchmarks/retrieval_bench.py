"""Retrieval benchmark: quality (recall@1/3/5 per mode on examples/qa.jsonl), ingest throughput
(single process vs Ray Data), and search latency on Milvus Lite. Prints measured numbers; --json for scripts.

    python benchmarks/retrieval_bench.py [--replicas 4] [--latency-queries 100] [--skip-ray] [--json]

A hit counts for recall@k when any of the top k hits comes from the question's source document.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.cli import add_json_flag, emit, log, run_cli  # noqa: E402
from core.errors import UserError  # noqa: E402
from retrieval import RetrievalConfig, Retriever  # noqa: E402
from retrieval.retriever import MODES  # noqa: E402

KS = (1, 3, 5)


def load_questions(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path} not found: the benchmark needs examples/qa.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def quality(r: Retriever, questions: list[dict], collection: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for mode in MODES:
        found = {k: 0 for k in KS}
        for q in questions:
            sources = [
                h.source for h in r.search(q["question"], top_k=max(KS), mode=mode, collection=collection)
            ]
            for k in KS:
                found[k] += q["source"] in sources[:k]
        out[mode] = {f"recall@{k}": round(found[k] / len(questions), 3) for k in KS}
    return out


def latency(r: Retriever, questions: list[dict], collection: str, n: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for mode in MODES:
        r.search(questions[0]["question"], mode=mode, collection=collection)  # warm-up
        times = []
        for i in range(n):
            t = time.perf_counter()
            r.search(questions[i % len(questions)]["question"], top_k=5, mode=mode, collection=collection)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out[mode] = {
            "p50_ms": round(statistics.median(times), 1),
            "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 1),
        }
    return out


def replicate(docs: Path, dest: Path, n: int) -> Path:
    for i in range(n):
        shutil.copytree(docs, dest / f"copy{i}")
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", default=str(REPO / "examples"), help="folder with docs/ and qa.jsonl")
    p.add_argument("--replicas", type=int, default=4, help="copies of the corpus for the throughput runs")
    p.add_argument("--latency-queries", type=int, default=100, help="searches per mode for p50/p99")
    p.add_argument("--threads", type=int, default=0, help="embedder torch threads (config embed_threads)")
    p.add_argument("--skip-ray", action="store_true", help="skip the Ray Data throughput run")
    add_json_flag(p)
    args = p.parse_args(argv)
    examples = Path(args.examples).resolve()
    questions = load_questions(examples / "qa.jsonl")
    work = Path(tempfile.mkdtemp(prefix="retrieval-bench-"))
    result: dict = {"questions": len(questions), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0]}
    try:
        cfg = RetrievalConfig(
            uri=str(work / "bench.db"), source_root=str(examples), embed_threads=args.threads
        )
        r = Retriever(cfg)
        report = r.ingest_paths([str(examples / "docs")], collection="quality")
        result["corpus"] = {
            "files": report["files"],
            "chunks": report["chunks"],
            "skipped": report["skipped"],
        }
        log(f"ingested {report['files']} files, {report['chunks']} chunks")
        result["recall"] = quality(r, questions, "quality")
        result["latency"] = latency(r, questions, "quality", args.latency_queries)

        big = replicate(examples / "docs", work / "big", args.replicas)
        r.cfg = cfg.model_copy(update={"source_root": str(big)})
        rep = r.ingest_paths([str(big)], collection="tput_single")
        result["throughput"] = {
            "single": {"chunks": rep["chunks"], "seconds": rep["seconds"], "chunks_per_s": round(rep["chunks"] / rep["seconds"], 1)}
        }  # fmt: skip
        log(f"single process: {rep['chunks']} chunks in {rep['seconds']} s")
        if not args.skip_ray:
            from core.ray_conn import connect

            connect()  # Ray start-up is not part of the measured ingest
            rep = r.ingest_paths([str(big)], collection="tput_ray", ray=True)
            result["throughput"]["ray"] = {
                "chunks": rep["chunks"], "seconds": rep["seconds"], "chunks_per_s": round(rep["chunks"] / rep["seconds"], 1),
                "actors": cfg.ray_actors,
            }  # fmt: skip
            log(f"ray data: {rep['chunks']} chunks in {rep['seconds']} s")
        r.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_avg_end"] = os.getloadavg()[0]
    emit(result, args.json, render)
    return 0


def render(res: dict) -> str:
    lines = [
        f"corpus: {res['corpus']['files']} files, {res['corpus']['chunks']} chunks; {res['questions']} questions; "
        f"{res['cpus']} CPUs, load average {res['load_avg_start']:.1f} at start, {res['load_avg_end']:.1f} at end",
        "",
    ]
    lines += [
        "| mode | recall@1 | recall@3 | recall@5 | search p50 (ms) | search p99 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for mode, rec in res["recall"].items():
        lat = res["latency"][mode]
        lines.append(
            f"| {mode} | {rec['recall@1']:.3f} | {rec['recall@3']:.3f} | {rec['recall@5']:.3f} | {lat['p50_ms']} | {lat['p99_ms']} |"
        )
    lines += ["", "| ingest path | chunks | seconds | chunks/s |", "|---|---|---|---|"]
    for path, t in res["throughput"].items():
        lines.append(f"| {path} | {t['chunks']} | {t['seconds']} | {t['chunks_per_s']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_cli(main))
