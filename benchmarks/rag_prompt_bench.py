"""Choose the RAG prompt by measurement: system prompt x context placement x top_k on the example questions.

The router's own prompt code builds every prompt (serving.prompt.PromptBuilder over retrieval.context), the
project's retriever fetches the chunks (hybrid search on Milvus Lite), and one offline vLLM engine answers
greedily, so variants differ only in the prompt. Prints a table (contains, token F1, prompt tokens) per variant.

    .venv/bin/python benchmarks/rag_prompt_bench.py [--model DIR] [--adapter DIR] [--limit N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")

PROMPTS = {
    "cite": "Answer using the context below. Cite sources by their [n] number.",
    "exact": "Answer the question using only the context below. Give the exact figure, name or step from the "
    "context in one or two sentences, and cite the source as [n].",
    "expert": "You are a support engineer for Helix Windworks. Use the context below, which comes from the "
    "company's manuals and policies. Quote the exact values it gives.",
}
TOP_KS = (2, 4, 6)
PLACEMENTS = ("system", "user")


def build_index(uri: str) -> Any:
    from retrieval.config import RetrievalConfig
    from retrieval.retriever import Retriever

    cfg = RetrievalConfig(uri=uri, collection="bench_docs", source_root=str(REPO / "examples"))
    retriever = Retriever(cfg)
    retriever.ingest_paths([str(REPO / "examples" / "docs")])
    return retriever


def main() -> int:
    from core.hardware import cpu_has_native_bf16
    from evaluation.runner import contains, load_questions, token_f1
    from serving.prompt import PromptBuilder
    from training.gguf_import import ensure_default

    # SIGTERM must unwind like Ctrl-C: vLLM ends its engine processes on exit, and an orphaned engine keeps a core
    # and gigabytes busy (it skewed a demo measurement once).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="base model folder (default: the imported SmolLM2)")
    p.add_argument("--adapter", default=None, help="optional LoRA adapter folder to answer with")
    p.add_argument("--limit", type=int, default=None, help="first N questions only")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompts", default=",".join(PROMPTS), help=f"subset of {','.join(PROMPTS)}")
    p.add_argument("--placements", default=",".join(PLACEMENTS), help="subset of system,user")
    p.add_argument("--top-k", default=",".join(map(str, TOP_KS)), help="comma-separated top_k values")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    prompts_ = [n for n in args.prompts.split(",") if n]
    unknown = [n for n in prompts_ if n not in PROMPTS]
    if unknown:
        p.error(f"--prompts: unknown {unknown}; choose from {list(PROMPTS)}")
    ks = [int(k) for k in args.top_k.split(",") if k]
    model = args.model or ensure_default()["path"]
    questions = load_questions(REPO / "examples" / "qa.jsonl")[: args.limit]
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        retriever = build_index(str(Path(tmp) / "milvus.db"))
        hits = {
            q["id"]: [h.to_dict() for h in retriever.search(q["question"], max(ks), collection="bench_docs")]
            for q in questions
        }
        retriever.close()
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    dtype = "bfloat16" if cpu_has_native_bf16() else "float32"
    llm = LLM(model=model, dtype=dtype, kv_cache_memory_bytes=1 << 30, enforce_eager=True, max_model_len=2048,
              enable_lora=bool(args.adapter), max_lora_rank=64)  # fmt: skip
    lora = LoRARequest("a", 1, args.adapter) if args.adapter else None
    tok = llm.get_tokenizer()
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    results = []
    variants = [(None, "none", 0)] + [
        (n, pl, k) for n in prompts_ for pl in args.placements.split(",") if pl for k in ks
    ]
    for name, placement, k in variants:
        builder = PromptBuilder(tok, 2048, PROMPTS.get(name or "cite", ""), placement)
        prompts = []
        for q in questions:
            ids, _ = builder.build(
                args.max_tokens, hits[q["id"]][:k], [{"role": "user", "content": q["question"]}]
            )
            prompts.append({"prompt_token_ids": ids})
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
        answers = [o.outputs[0].text for o in outs]
        row = {
            "prompt": name or "no RAG",
            "placement": placement,
            "top_k": k,  # retrieval is done once at max(ks); a variant takes the best k
            "contains": round(
                sum(contains(a, q["answer"]) for a, q in zip(answers, questions, strict=True))
                / len(questions),
                3,
            ),
            "f1": round(
                sum(token_f1(a, q["answer"]) for a, q in zip(answers, questions, strict=True))
                / len(questions),
                3,
            ),
            "prompt_tokens": round(sum(len(p["prompt_token_ids"]) for p in prompts) / len(prompts)),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        results.append(row)
        print(f"{row['prompt']:>8} {row['placement']:>6} k={k}: contains {row['contains']:.3f} f1 {row['f1']:.3f} "
              f"({row['prompt_tokens']} prompt tokens, {row['seconds']} s)", file=sys.stderr, flush=True)  # fmt: skip
    best = max(results, key=lambda r: (r["contains"], r["f1"]))
    summary = {"model": model, "adapter": args.adapter, "questions": len(questions), "dtype": dtype,
               "results": results, "best": best}  # fmt: skip
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            "| prompt | placement | top_k | contains | token F1 | prompt tokens | s |\n|---|---|---|---|---|---|---|"
        )
        for r in results:
            print(f"| {r['prompt']} | {r['placement']} | {r['top_k']} | {r['contains']:.3f} | {r['f1']:.3f} | "
                  f"{r['prompt_tokens']} | {r['seconds']} |")  # fmt: skip
        print(f"\nbest: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
