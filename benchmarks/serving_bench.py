"""Serving speed on the real default model (SmolLM2-135M-Instruct): this router (RAG off) against plain
`vllm serve` with identical engine arguments, the cost of LoRA, of many adapters, of a cold adapter and of RAG.
Prints measured numbers and every goal of issue 11, met or not.

    .venv/bin/python benchmarks/serving_bench.py [--repeats 3] [--max-tokens 32] [--levers L,...] [--json]

Each server runs in its own process, one after the other, never together (vLLM's CPU KV cache is NUMA-bound and
two engines would share 2 cores: STACK.md). The peer is stock `vllm serve`: vLLM's own CPU LoRA ops
(DE_LORA_CPU_OPS=vllm; the project's plugin is installed in the same environment and would load there too); the
router uses its default, `serving/lora_cpu_ops.py`. Levers, each one more server phase:
`throughput` runs the router under Ray Serve's throughput-optimized mode (RAY_SERVE_THROUGHPUT_OPTIMIZED=1: gRPC
between deployments, direct ingress); `lora-ops` runs `vllm serve` with the project's LoRA ops, which separates the
ops' effect from the router's.
Every round sends fresh prompts (a per-round prefix), so vLLM's prefix cache cannot turn rounds 2-3 into replays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.serving_client import Body, first_tokens, table, workload  # noqa: E402

NAME = "smollm2"
ENGINE = {
    "max_model_len": 2048,
    "max_lora_rank": 16,
    "max_loras": 4,
    "max_loaded_adapters": 16,
    "kv_cache_gib": 1.0,
}
N_ADAPTERS, N_COLD = 16, 8
DOC = (
    "# Pump P-{i}\n\nThe pump P-{i} is flushed every {h} operating hours with demineralised water at 40 C. Close "
    "valve V{i} and lock out the motor before opening the housing. Torque for the housing bolts is {t} Nm, tightened "
    "crosswise in two passes. A leaking seal is replaced with kit K-{i}; the old seal goes to hazardous waste. After "
    "service, run the pump dry for no more than 10 seconds and check the pressure gauge reads 2.{i} bar."
)


def short_prompts(models: list[str], n: int, max_tokens: int, rnd: int) -> list[Body]:
    return [
        (
            "/v1/completions",
            {
                "model": models[i % len(models)],
                "prompt": f"[{rnd}.{i}] How is pump P-{i % 20} serviced?",
                "max_tokens": max_tokens,
                "ignore_eos": True,
                "temperature": 0,
            },
        )  # fmt: skip
        for i in range(n)
    ]


def long_prompts(model: str, n: int, max_tokens: int, rnd: int) -> list[Body]:
    """RAG-sized prompts (~800 tokens of context, as 4 retrieved chunks give), without the retriever."""
    out = []
    for i in range(n):
        context = "\n\n".join(DOC.format(i=(i + k) % 20, h=100 + k, t=20 + k) for k in range(8))
        prompt = f"[{rnd}.{i}] Context:\n{context}\n\nQuestion: what torque do the bolts of pump P-{i % 20} need?\nAnswer:"
        out.append(("/v1/completions", {"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                        "ignore_eos": True, "temperature": 0}))  # fmt: skip
    return out


def chats(n: int, max_tokens: int, rnd: int, rag: bool) -> list[Body]:
    out = []
    for i in range(n):
        body: dict[str, Any] = {"model": NAME, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0,
                                "messages": [{"role": "user", "content": f"[{rnd}.{i}] What torque for pump P-{i % 20}?"}]}  # fmt: skip
        if rag:
            body["rag"] = {"collection": "bench", "top_k": 4}
        out.append(("/v1/chat/completions", body))
    return out


CPU_KEYS = ("base/plain/c64", "base/stream/c64")  # where each server's own processes are timed


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each named process so far (the engine core's process is not among them)."""
    import psutil

    out = {}
    for name, pid in pids.items():
        t = psutil.Process(pid).cpu_times()
        out[name] = t.user + t.system
    return out


def measure(
    url: str,
    adapters: list[str],
    args: argparse.Namespace,
    router: bool,
    pids: dict[str, int],
    full: bool = True,
) -> dict[str, Any]:
    """Every workload of one server; the router adds many-adapter, cold-adapter and RAG workloads. For CPU_KEYS
    the CPU time of the server's own processes (HTTP, router, engine front end) is recorded per request."""
    m, r = args.max_tokens, args.repeats
    out: dict[str, Any] = {}

    def run(key: str, make: Any, concurrency: int, stream: bool, repeats: int = r) -> None:
        before = cpu_seconds(pids) if key in CPU_KEYS else {}
        out[key] = asyncio.run(workload(url, make, concurrency, stream, repeats))
        if before:
            after = cpu_seconds(pids)
            n = len(make(-1)[:4]) + repeats * len(make(0))
            out[f"cpu_ms_per_request/{key}"] = {k: 1000 * (after[k] - before[k]) / n for k in pids}
        print(f"  {key}: {out[key]['tok_s']:.0f} tok/s", file=sys.stderr, flush=True)

    for stream in (False, True):
        for c in (16, 64):
            n = max(32, c)  # c16: two waves; c64: one (2 cores make ~100-200 tok/s: rounds must stay short)
            mode = "stream" if stream else "plain"
            run(f"base/{mode}/c{c}", lambda k, n=n: short_prompts([NAME], n, m, k), c, stream)
            if full:
                run(f"mixed4/{mode}/c{c}", lambda k, n=n: short_prompts(adapters[:4], n, m, k), c, stream)
    if not full:
        return out
    run("lora1/stream/c16", lambda k: short_prompts(adapters[:1], 32, m, k), 16, True)
    # ~900-token prompts: minutes a round with LoRA on 2 cores, so one wave of 8 and one round
    run("long_base/stream/c8", lambda k: long_prompts(NAME, 8, m, k), 8, True, 1)
    run("long_lora1/stream/c8", lambda k: long_prompts(adapters[0], 8, m, k), 8, True, 1)
    if router:
        run("adapters16/stream/c16", lambda k: short_prompts(adapters[:N_ADAPTERS], 32, m, k), 16, True)
        run("chat_norag/stream/c16", lambda k: chats(32, m, k, rag=False), 16, True)
        run("chat_rag/stream/c16", lambda k: chats(32, m, k, rag=True), 16, True)
        cold = [f"cold-{i:02d}" for i in range(N_COLD)]
        out["cold_ttft_ms"] = asyncio.run(first_tokens(url, short_prompts(cold, N_COLD, m, 99)))
    return out


def engine_flags() -> list[str]:
    from serving.llm import engine_dtype

    # what the router's LLM replica resolves "auto" to: the same engine on both servers
    dtype = engine_dtype("auto", gpu=False)
    return ["--max-model-len", str(ENGINE["max_model_len"]), "--max-lora-rank", str(ENGINE["max_lora_rank"]),
            "--max-loras", str(ENGINE["max_loras"]), "--max-cpu-loras", str(ENGINE["max_loaded_adapters"]),
            "--dtype", dtype, "--kv-cache-memory-bytes", str(int(ENGINE["kv_cache_gib"] * 2**30)),
            "--enforce-eager", "--disable-log-stats"]  # fmt: skip


def phase_vllm(model: Path, store: Path, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from core.adapter_store import AdapterStore
    from core.net import free_port

    s = AdapterStore(store)
    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", NAME, "--host", "127.0.0.1", "--port", str(port), "--enable-lora",
           "--lora-modules", *[f"{n}={s.local_path(n)}" for n in names], *engine_flags()]  # fmt: skip
    log = open(Path(args.workdir) / "vllm-serve.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"vllm serve did not come up; see {log.name}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        return measure(
            url, names, args, router=False, pids={"vllm serve (HTTP + engine front end)": proc.pid}
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def phase_router(
    model: Path, store: Path, names: list[str], args: argparse.Namespace, full: bool = True
) -> dict[str, Any]:
    import httpx

    from core.net import free_port
    from serving.app import start, stop

    port = free_port()
    cfg = {
        "app_name": "expert-bench",
        "model": {
            "path": str(model),
            "name": NAME,
            "enforce_eager": True,
            "dtype": "auto",  # resolved by serving.llm.engine_dtype, as engine_flags() does for vllm serve
            **ENGINE,
        },  # fmt: skip
        "adapters": {"store": str(store)},
        "retriever": {"uri": str(Path(args.workdir) / f"milvus-{os.getpid()}.db"), "collection": "bench"},
        "router": {
            "host": "127.0.0.1",
            "port": port,
            "api_keys_env": None,
            "max_in_flight": 1024,
            "max_queued": 0,
            "replicas": {"num_cpus": 0.5, "max_ongoing_requests": 1024},
        },  # fmt: skip
    }
    url = start(cfg, port=port)
    try:
        docs = [{"source": f"pumps/p{i}.md", "text": DOC.format(i=i, h=100 + i, t=20 + i)} for i in range(20)]
        httpx.post(
            f"{url}/v1/documents", json={"collection": "bench", "documents": docs}, timeout=300
        ).raise_for_status()
        return measure(url, names, args, router=True, pids=serve_pids(cfg["app_name"]), full=full)
    finally:
        stop()


def serve_pids(app: str) -> dict[str, int]:
    """The processes a request crosses before the engine core: Serve's HTTP proxy, the router replica and the LLM
    replica (Serve plus vLLM's engine front end, as in `vllm serve`'s own process). Found by Ray's process titles
    among this process's descendants (the local cluster's), not through the state API, which needs a dashboard."""
    import psutil

    titles = {
        "ray::ProxyActor": "Serve HTTP proxy",
        f"ray::ServeReplica:{app}:Router": "router replica",
        f"ray::ServeReplica:{app}:LLMServer": "LLM replica (Serve + engine front end)",
    }
    pids = {}
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        for prefix, name in titles.items():
            if title.startswith(prefix):
                pids[name] = proc.pid
    return pids


def prepare(work: Path) -> tuple[Path, Path, list[str]]:
    """The imported SmolLM2 and a store of 16 + 8 (cold) rank-16 all-linear adapters, the demo's adapter shape."""
    from core.adapter_store import AdapterStore
    from core.fingerprint import model_fingerprint
    from training.gguf_import import ensure_default
    from training.tiny import random_adapter

    model = Path(ensure_default()["path"])
    fp = model_fingerprint(model)
    store = AdapterStore(work / "adapters", cache_dir=work / "cache")
    names = [f"bench-{i:02d}" for i in range(N_ADAPTERS)] + [f"cold-{i:02d}" for i in range(N_COLD)]
    for i, name in enumerate(names):
        if not store.exists(name):
            src = random_adapter(model, work / f"src-{name}", seed=i, rank=16, targets="all-linear")
            store.publish(src, name, {"base_model": NAME}, base_fingerprint=fp)
    return model, work / "adapters", names[:N_ADAPTERS]


def run_phase(
    phase: str, args: argparse.Namespace, env: dict[str, str] | None = None, tag: str | None = None
) -> dict[str, Any]:
    """One server's measurements in a fresh process (a fresh Ray for each router variant); `tag` names the
    results file when one phase runs under two settings."""
    out = Path(args.workdir) / f"{tag or phase}.json"
    if (tag or phase) in args.reuse.split(",") and out.is_file():
        print(f"# phase {phase}: reusing {out}", file=sys.stderr, flush=True)
        return json.loads(out.read_text())
    cmd = [sys.executable, __file__, "--phase", phase, "--workdir", args.workdir,
           "--repeats", str(args.repeats), "--max-tokens", str(args.max_tokens), "--out", str(out)]  # fmt: skip
    print(f"# phase {phase}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, timeout=3600)
    if proc.returncode != 0:
        return {"failed": f"exit {proc.returncode} (see stderr above)"}
    return json.loads(out.read_text())


def parity_rows(
    peer_label: str, peer: dict[str, Any], ours: dict[str, Any]
) -> list[tuple[str, float, str, bool]]:
    """The router against one `vllm serve` run: tok/s ratio per base/mixed workload, TTFT delta when streaming."""
    rows = []
    for key in [k for k in peer if "/" in k and k.split("/")[0] in ("base", "mixed4") and k in ours]:
        ratio = ours[key]["tok_s"] / peer[key]["tok_s"]
        rows.append((f"router/{peer_label} tok/s {key}", ratio, ">= 0.95", ratio >= 0.95))
        if "/stream/" in key:
            delta = ours[key]["ttft_p50_ms"] - peer[key]["ttft_p50_ms"]
            rows.append((f"TTFT p50 router - {peer_label} {key} (ms)", delta, "<= +20", delta <= 20))
    return rows


def goals(
    vllm: dict[str, Any], ours: dict[str, Any], extra: dict[str, Any] | None = None
) -> list[tuple[str, float, str, bool]]:
    """(what, measured, goal, met) for every goal of issue 11 that one run can measure."""
    rows = parity_rows("vllm", vllm, ours)
    peers = [("router", ours), ("vllm serve", vllm)]
    if extra and "failed" not in extra:  # like for like: the same LoRA ops in both engines
        rows += parity_rows("(vllm serve + lora_cpu_ops)", extra, ours)
        peers.append(("vllm serve + serving.lora_cpu_ops", extra))
    for who, res in peers:
        for short, long_ in (
            ("lora1/stream/c16", "base/stream/c16"),
            ("long_lora1/stream/c8", "long_base/stream/c8"),
        ):
            x = res[short]["tok_s"] / res[long_]["tok_s"]
            what = f"LoRA cost {who}: {short.split('/')[0]} / {long_.split('/')[0]} tok/s"
            rows.append((what, x, ">= 0.7", x >= 0.7))
    x = ours["adapters16/stream/c16"]["tok_s"] / ours["lora1/stream/c16"]["tok_s"]
    rows.append(("16 adapters / 1 adapter tok/s (router)", x, ">= 0.9", x >= 0.9))
    cold = ours["cold_ttft_ms"]
    rows.append(("cold adapter first token p50 (ms)", statistics.median(cold), "reported", True))
    rows.append(("cold adapter first token p99 = max of 8 (ms)", max(cold), "bounded, reported", True))
    rag = ours["chat_rag/stream/c16"]
    rows.append(
        (
            "RAG retrieval p50 at c16, router's clock (ms)",
            rag["retrieval_p50_ms"],
            "<= 50",
            rag["retrieval_p50_ms"] <= 50,
        )
    )
    d = rag["ttft_p50_ms"] - ours["chat_norag/stream/c16"]["ttft_p50_ms"]
    rows.append(("RAG on - off TTFT p50 at c16, incl. longer prefill (ms)", d, "reported", True))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument(
        "--repeats", type=int, default=3, help="measured rounds per workload (median reported)"
    )
    parser.add_argument(
        "--levers", default="", help="comma-separated extra phases: throughput, lora-ops (or all)"
    )
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    parser.add_argument("--reuse", default="", help="phases whose results in --workdir are kept, e.g. vllm")
    parser.add_argument("--phase", choices=["vllm", "router", "router-core"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="serving-bench-")
    work = Path(args.workdir)
    os.environ.setdefault("DE_DATA_DIR", str(work / "data"))
    model, store, names = prepare(work)
    if args.phase:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop the servers
        if args.phase == "vllm":
            result = phase_vllm(model, store, names, args)
        else:
            result = phase_router(model, store, names, args, full=args.phase == "router")
        Path(args.out).write_text(json.dumps(result))
        return 0
    levers = {"throughput", "lora-ops"} if args.levers == "all" else set(filter(None, args.levers.split(",")))
    if levers - {"throughput", "lora-ops"}:
        parser.error(
            f"--levers: unknown {sorted(levers - {'throughput', 'lora-ops'})}; use throughput, lora-ops"
        )
    started = time.monotonic()
    results = {
        "vllm": run_phase("vllm", args, {"DE_LORA_CPU_OPS": "vllm"}),
        "router": run_phase("router", args),
    }
    if "throughput" in levers:
        results["router_throughput_optimized"] = run_phase(
            "router-core", args, {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
        )
    if "lora-ops" in levers:
        results["vllm_lora_cpu_ops"] = run_phase("vllm", args, {"DE_LORA_CPU_OPS": "grouped"}, tag="vllm-ops")
    vllm, ours = results["vllm"], results["router"]
    print(f"\n# SmolLM2-135M-Instruct, {args.max_tokens} tokens/request (ignore_eos), {args.repeats} rounds; "
          f"{time.monotonic() - started:.0f} s wall")  # fmt: skip
    for who, res in results.items():
        if "failed" in res:
            print(f"\n{who}: FAILED {res['failed']}")
            continue
        print(
            f"\n## {who}\n" + table([(k, v) for k, v in res.items() if isinstance(v, dict) and "tok_s" in v])
        )
        for k, v in res.items():
            if k.startswith("cpu_ms_per_request/"):
                print(
                    f"CPU ms per request, {k.split('/', 1)[1]}: "
                    + ", ".join(f"{p} {ms:.1f}" for p, ms in v.items())
                )
    if "failed" not in vllm and "failed" not in ours:
        rows = goals(vllm, ours, results.get("vllm_lora_cpu_ops"))
        print("\n| goal | measured | target | met |\n|---|---|---|---|")
        for what, value, target, met in rows:
            print(f"| {what} | {value:.2f} | {target} | {'yes' if met else '**no**'} |")
        results["goals"] = [{"goal": w, "measured": v, "target": t, "met": m} for w, v, t, m in rows]
        fast = results.get("router_throughput_optimized")
        if fast and "failed" not in fast:
            lever = {
                k: fast[k]["tok_s"] / ours[k]["tok_s"]
                for k in fast
                if isinstance(fast[k], dict) and "tok_s" in fast[k] and k in ours
            }
            print("\nthroughput-optimized / default router tok/s: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in lever.items()))  # fmt: skip
            results["lever_throughput_optimized"] = lever
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
