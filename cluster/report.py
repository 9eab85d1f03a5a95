"""The demo's report: one markdown file with the timings, the training numbers and the four-mode table,
next to PNG plots (training loss, score per mode) and a machine-readable summary.json.

Kept apart from the orchestration so the same report can be rebuilt from a saved summary.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from evaluation.runner import markdown_table, plot_scores


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def write_report(run_dir: Path, summary: dict[str, Any]) -> dict[str, str]:
    """Write report.md, loss_curve.png, scores.png, summary.json into `run_dir`; return their paths."""
    run_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    train = summary.get("training") or {}
    adapter_dir = Path(train.get("adapter_path") or "")
    for name in ("loss_curve.png", "metrics.jsonl"):
        if (adapter_dir / name).is_file():
            shutil.copy2(adapter_dir / name, run_dir / name)
            files[name] = str(run_dir / name)
    evaluation = summary.get("evaluation") or {}
    if evaluation.get("modes"):
        files["scores.png"] = str(plot_scores(evaluation["modes"], run_dir / "scores.png"))
        (run_dir / "eval.json").write_text(json.dumps(evaluation, indent=2, default=str))
        files["eval.json"] = str(run_dir / "eval.json")

    steps = summary.get("steps", [])
    lines = [
        f"# Demo run {run_dir.name}",
        "",
        f"Total wall time: **{_fmt(summary.get('total_s'), 1)} s** on {summary.get('machine', 'this machine')}. "
        f"Base model: {summary.get('base_model', 'n/a')}. The scores below are measured, not tuned to a goal: "
        "a 135M-parameter model is small, so expect it to miss questions a larger base would answer.",
        "",
        "## Steps",
        "",
        "| step | seconds | reused | detail |",
        "|---|---|---|---|",
        *[
            f"| {s['name']} | {_fmt(s['seconds'], 1)} | {'yes' if s['reused'] else 'no'} | {s['detail']} |"
            for s in steps
        ],
        "",
        "## Fine-tuning (Ray Train, DeepSpeed ZeRO-3, QLoRA, 2 workers)",
        "",
        f"- adapter `{train.get('adapter_name')}` at `{train.get('adapter_path')}`",
        f"- loss {_fmt(train.get('initial_loss'))} -> {_fmt(train.get('final_loss'))} over {train.get('steps')} steps"
        f", eval loss {_fmt(train.get('eval_loss'))}, {_fmt(train.get('tokens_per_s'), 0)} tokens/s",
        "",
        "![training loss](loss_curve.png)" if "loss_curve.png" in files else "(no loss curve found)",
        "",
        "## Four modes side by side",
        "",
        f"{evaluation.get('questions', 0)} questions from `{summary.get('questions_file')}`; "
        "exact match, containment (reference inside the answer), token F1 and ROUGE-L against the reference "
        "answers; source hit rate = share of questions whose reference document is among the response's "
        "`sources` (RAG modes only).",
        "",
        markdown_table(evaluation["modes"]) if evaluation.get("modes") else "(evaluation did not run)",
        "",
        "![scores per mode](scores.png)" if "scores.png" in files else "",
        "",
        "## Sample answers",
        "",
        *sample_lines(evaluation),
        "",
        "## Serve these artefacts again",
        "",
        "```",
        *summary.get("serve_again", []),
        "```",
        "",
    ]
    (run_dir / "report.md").write_text("\n".join(lines))
    files["report.md"] = str(run_dir / "report.md")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    files["summary.json"] = str(run_dir / "summary.json")
    return files


def sample_lines(evaluation: dict[str, Any], n: int = 3) -> list[str]:
    """The first n questions with each mode's answer and cited sources (report and demo console)."""
    rows = evaluation.get("rows") or []
    ids = []
    for r in rows:
        if r["id"] not in ids:
            ids.append(r["id"])
    out = []
    for qid in ids[:n]:
        mine = [r for r in rows if r["id"] == qid]
        out.append(f"**{qid}** reference: `{mine[0]['reference']}`")
        out.append("")
        for r in mine:
            answer = (r["answer"] or r["error"] or "").replace("\n", " ").replace("|", "/")[:160]
            cited = ", ".join(sorted({str(s.get("source")) for s in r.get("sources") or []}))[:160]
            out.append(f"- {r['mode']}: {answer!r}" + (f" (sources: {cited})" if cited else ""))
        out.append("")
    return out
