"""Four-mode evaluation of a deployed endpoint: base, base+RAG, adapter, adapter+RAG, on your own questions.

Fine-tuning, retrieval, or both? The answer depends on the data, so this asks the endpoint the same questions
in each mode and scores the answers against references (exact match, containment, token F1, ROUGE-L) and the
cited sources against each question's reference document (retrieval hit rate). It talks plain HTTP to any
OpenAI-compatible endpoint of this project, local or on a cluster; the demo uses it too.

    python -m evaluation --config evaluation/configs/local.yaml --questions examples/qa.jsonl [--modes base,adapter]
        [--out DIR] [--limit N] [key=value ...] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import string
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from core.cli import add_json_flag, emit, log
from core.config import BaseConfig
from core.errors import UserError

MODES = ("base", "base+rag", "adapter", "adapter+rag")
Mode = Literal["base", "base+rag", "adapter", "adapter+rag"]
METRICS = ("exact_match", "contains", "f1", "rouge_l", "hit_rate")


class EvalConfig(BaseConfig):
    """Which endpoint to ask, as whom, and how."""

    base_url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible base URL (ends in /v1)")
    api_key: str | None = Field(None, description="bearer key; prefer api_key_env so keys stay out of files")
    api_key_env: str | None = Field("DE_API_KEY", description="environment variable holding the bearer key")
    base_model: str = Field(description="model id of the base model on the endpoint")
    adapter: str | None = Field(None, description="adapter (or route) name for the adapter modes")
    collection: str = Field("helix_docs", description="collection searched in the +rag modes")
    top_k: int = Field(4, ge=1, le=100, description="chunks retrieved per question in the +rag modes")
    max_tokens: int = Field(32, ge=1, description="completion tokens per answer")
    temperature: float = Field(
        0.0, ge=0.0, le=2.0, description="sampling temperature (0: greedy, reproducible)"
    )
    concurrency: int = Field(4, ge=1, le=256, description="requests in flight at once")
    timeout_s: float = Field(120.0, gt=0, description="deadline per request")
    modes: list[Mode] = Field(default_factory=lambda: list(MODES), description="modes to run, in table order")
    system_prompt: str | None = Field(None, description="optional system message sent with every question")

    @model_validator(mode="after")
    def _adapter_needed(self) -> EvalConfig:
        if any(m.startswith("adapter") for m in self.modes) and not self.adapter:
            raise ValueError("adapter: required when modes include 'adapter' or 'adapter+rag'")
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes: duplicates in {self.modes}")
        return self

    def key(self) -> str | None:
        return self.api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)


# ---- scoring: plain functions over strings, tested on case tables -------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


_NUMBER_SEP = re.compile(r"(?<=\d)([.,])(?=\d)")  # decimal points and thousands separators inside numbers


def normalize(text: str) -> str:
    """SQuAD normalisation (lower case, no punctuation, no articles, single spaces), except that separators inside
    numbers are kept: plain SQuAD turns "2.5 m/s" into "25 ms", which then "contains" the reference "25 m/s"."""
    text = _NUMBER_SEP.sub(lambda m: "\0" if m.group(1) == "." else "\1", text.lower())
    text = _ARTICLES.sub(" ", text.translate(_PUNCT)).replace("\0", ".").replace("\1", ",")
    return " ".join(text.split())


def exact_match(pred: str, ref: str) -> float:
    return float(normalize(pred) == normalize(ref))


def contains(pred: str, ref: str) -> float:
    """The reference appears in the answer (answers are sentences, references often a number and a unit)."""
    p, r = f" {normalize(pred)} ", f" {normalize(ref)} "
    return float(bool(r.strip()) and r in p)


def token_f1(pred: str, ref: str) -> float:
    p, r = normalize(pred).split(), normalize(ref).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1: longest common token subsequence, balanced precision/recall."""
    p, r = normalize(pred).split(), normalize(ref).split()
    if not p or not r:
        return float(p == r)
    prev = [0] * (len(r) + 1)
    for tok in p:
        cur = [0]
        for j, rt in enumerate(r):
            cur.append(prev[j] + 1 if tok == rt else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def source_hit(ref_source: str | None, sources: list[dict[str, Any]] | None) -> float | None:
    """1 if a cited source is the reference document (path-suffix match), 0 if not, None without a reference."""
    if not ref_source:
        return None
    ref = [p for p in Path(ref_source).parts if p not in (".", "")]
    for s in sources or []:
        parts = Path(str(s.get("source", ""))).parts
        if ref and list(parts[-len(ref) :]) == ref:
            return 1.0
    return 0.0


# ---- questions file ------------------------------------------------------------------------------------------


def load_questions(path: str | Path) -> list[dict[str, Any]]:
    """jsonl rows {id, question, answer, source?}; every bad line is reported with its number."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"questions file not found: {path}")
    rows, problems, seen = [], [], set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            problems.append(f"line {n}: not valid JSON ({exc.msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"line {n}: expected a JSON object with question and answer")
            continue
        missing = [k for k in ("question", "answer") if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            problems.append(f"line {n}: missing or empty {', '.join(missing)}")
            continue
        qid = str(row.get("id", f"line-{n}"))
        if qid in seen:
            problems.append(f"line {n}: duplicate id {qid!r}")
            continue
        seen.add(qid)
        rows.append(
            {"id": qid, "question": row["question"], "answer": row["answer"], "source": row.get("source")}
        )
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise UserError(f"{path}: {'; '.join(problems[:5])}{more}")
    if not rows:
        raise UserError(f"{path}: no questions (expected one JSON object per line with question and answer)")
    return rows


# ---- asking the endpoint ------------------------------------------------------------------------------------


def request_body(cfg: EvalConfig, mode: str, question: str) -> dict[str, Any]:
    messages = ([{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []) + [
        {"role": "user", "content": question}
    ]
    body: dict[str, Any] = {
        "model": cfg.adapter if mode.startswith("adapter") else cfg.base_model,
        "messages": messages,
        "max_tokens": cfg.max_tokens,
        "temperature": cfg.temperature,
    }
    # Non-RAG modes say so explicitly: `adapter` may name a route whose default is rag: true.
    body["rag"] = {"collection": cfg.collection, "top_k": cfg.top_k} if mode.endswith("+rag") else False
    return body


def check_endpoint(cfg: EvalConfig) -> list[str]:
    """The endpoint answers and serves the models the modes need; returns the served model ids."""
    import httpx

    headers = {"Authorization": f"Bearer {cfg.key()}"} if cfg.key() else {}
    try:
        r = httpx.get(f"{cfg.base_url.rstrip('/')}/models", headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise UserError(
            f"cannot reach {cfg.base_url}: {exc}; is the endpoint up (python -m serving)?"
        ) from None
    if r.status_code in (401, 403):
        raise UserError(
            f"{cfg.base_url} refused the key (HTTP {r.status_code}); set api_key_env / {cfg.api_key_env}"
        )
    if r.status_code != 200:
        raise UserError(f"{cfg.base_url}/models answered HTTP {r.status_code}: {r.text[:200]}")
    try:
        served = [m.get("id") for m in r.json().get("data", [])]
    except (ValueError, AttributeError):
        raise UserError(
            f"{cfg.base_url}/models did not answer with a model list: is base_url an OpenAI endpoint?"
        ) from None
    wanted = {cfg.base_model} | ({cfg.adapter} if any(m.startswith("adapter") for m in cfg.modes) else set())
    missing = sorted(w for w in wanted if w not in served)
    if missing:
        raise UserError(
            f"{cfg.base_url} does not serve {', '.join(missing)} (served: {', '.join(served) or 'none'})"
        )
    return served


async def _ask_all(
    cfg: EvalConfig, questions: list[dict[str, Any]], modes: list[str]
) -> list[dict[str, Any]]:
    import httpx

    sem = asyncio.Semaphore(cfg.concurrency)
    headers = {"Authorization": f"Bearer {cfg.key()}"} if cfg.key() else {}
    url = f"{cfg.base_url.rstrip('/')}/chat/completions"

    async def ask(client: httpx.AsyncClient, mode: str, q: dict[str, Any]) -> dict[str, Any]:
        async with sem:
            t0 = time.monotonic()
            row: dict[str, Any] = {"id": q["id"], "mode": mode, "answer": "", "sources": [], "error": None}
            try:
                r = await client.post(url, json=request_body(cfg, mode, q["question"]), headers=headers)
                data = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                if r.status_code != 200:
                    row["error"] = f"HTTP {r.status_code}: {str(data.get('error', r.text))[:200]}"
                else:
                    row["answer"] = data["choices"][0]["message"].get("content") or ""
                    row["sources"] = data.get("sources") or []
            except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"[:200]
            row["latency_s"] = round(time.monotonic() - t0, 3)
            return row

    async with httpx.AsyncClient(timeout=cfg.timeout_s) as client:
        return await asyncio.gather(*(ask(client, m, q) for m in modes for q in questions))


def score(questions: list[dict[str, Any]], rows: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    """Per-question scores and a per-mode summary (means; hit rate only where retrieval was asked for)."""
    by_id = {q["id"]: q for q in questions}
    for row in rows:
        q = by_id[row["id"]]
        row["reference"] = q["answer"]
        row["exact_match"] = exact_match(row["answer"], q["answer"])
        row["contains"] = contains(row["answer"], q["answer"])
        row["f1"] = token_f1(row["answer"], q["answer"])
        row["rouge_l"] = rouge_l(row["answer"], q["answer"])
        row["hit_rate"] = source_hit(q["source"], row["sources"]) if row["mode"].endswith("+rag") else None
    summary = {}
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        ok = [r for r in mine if r["error"] is None]
        entry: dict[str, Any] = {"n": len(mine), "errors": len(mine) - len(ok)}
        for metric in METRICS:
            vals = [r[metric] for r in mine if r[metric] is not None]
            entry[metric] = round(sum(vals) / len(vals), 4) if vals else None
        entry["latency_s"] = round(sum(r["latency_s"] for r in ok) / len(ok), 3) if ok else None
        summary[mode] = entry
    return summary


def evaluate(
    cfg: EvalConfig, questions: list[dict[str, Any]], modes: list[str] | None = None
) -> dict[str, Any]:
    modes = list(modes or cfg.modes)
    served = check_endpoint(cfg)
    t0 = time.monotonic()
    rows = asyncio.run(_ask_all(cfg, questions, modes))
    summary = score(questions, rows, modes)
    return {
        "base_url": cfg.base_url,
        "base_model": cfg.base_model,
        "adapter": cfg.adapter,
        "served": served,
        "questions": len(questions),
        "modes": summary,
        "seconds": round(time.monotonic() - t0, 1),
        "rows": rows,
    }


def markdown_table(summary: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    head = "| mode | n | exact match | contains | token F1 | ROUGE-L | source hit rate | errors | latency s |"
    lines = [head, "|" + "---|" * 9]
    for mode, s in summary.items():
        cells = [
            s["n"],
            s["exact_match"],
            s["contains"],
            s["f1"],
            s["rouge_l"],
            s["hit_rate"],
            s["errors"],
            s["latency_s"],
        ]
        lines.append(f"| {mode} | " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(lines)


def plot_scores(summary: dict[str, Any], path: Path) -> Path:
    """Grouped bars: one group per metric, one bar per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(summary)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(modes))
    for i, mode in enumerate(modes):
        vals = [summary[mode][m] or 0.0 for m in METRICS]
        ax.bar([x + i * width for x in range(len(METRICS))], vals, width, label=mode)
    ax.set_xticks([x + width * (len(modes) - 1) / 2 for x in range(len(METRICS))], METRICS)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (mean over questions)")
    ax.set_title("answer quality and retrieval hit rate per mode")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(result: dict[str, Any], out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=2, default=str))
    md = [
        f"# Evaluation: {result['base_url']}",
        "",
        f"{result['questions']} questions, base `{result['base_model']}`, adapter `{result['adapter']}`.",
        "",
        markdown_table(result["modes"]),
        "",
        "![scores](scores.png)",
        "",
    ]
    (out / "eval.md").write_text("\n".join(md))
    plot_scores(result["modes"], out / "scores.png")
    return {"json": str(out / "eval.json"), "markdown": str(out / "eval.md"), "plot": str(out / "scores.png")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="EvalConfig YAML (see evaluation/configs/local.yaml)")
    parser.add_argument("--questions", required=True, help="jsonl: {id, question, answer, source?} per line")
    parser.add_argument("--modes", default=None, help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--out", type=Path, default=None, help="folder for eval.json, eval.md and scores.png")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides of the config")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.modes:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise UserError(f"--modes: unknown mode(s) {', '.join(bad)}; choose from {', '.join(MODES)}")
        overrides.append(f"modes=[{','.join(json.dumps(m) for m in modes)}]")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    cfg = EvalConfig.from_file(args.config, overrides)
    questions = load_questions(args.questions)[: args.limit]
    log(f"asking {cfg.base_url}: {len(questions)} questions x {len(cfg.modes)} modes")
    result = evaluate(cfg, questions)
    if args.out:
        result["files"] = write_outputs(result, args.out)
    summary = {k: v for k, v in result.items() if k != "rows"}
    emit(
        summary,
        args.json,
        lambda r: markdown_table(r["modes"]) + (f"\n\nwritten to {args.out}" if args.out else ""),
    )
    return 0
