#!/usr/bin/env python3
"""Check the synthetic Helix Windworks example data. Exit code 1 on any failure."""
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPECTED = {"docs": 30, "qa": 48, "qa_sources_min": 24, "instructions": 300, "alpaca": 40}


def text_of(path):
    t = path.read_text(encoding="utf-8")
    if path.suffix == ".html":
        t = re.sub(r"<[^>]+>", " ", t)
        t = t.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")
    return re.sub(r"\s+", " ", t)


def load_jsonl(name, errors):
    rows = []
    for n, line in enumerate((HERE / name).read_text(encoding="utf-8").splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            errors.append(f"{name}:{n}: {e}")
    return rows


def main():
    errors = []
    docs = sorted(p for p in (HERE / "docs").rglob("*") if p.is_file())
    if len(docs) != EXPECTED["docs"]:
        errors.append(f"docs: {len(docs)} files, expected {EXPECTED['docs']}")
    kinds = {}
    for p in docs:
        kinds[p.suffix] = kinds.get(p.suffix, 0) + 1
        words = len(text_of(p).split())
        if not 250 <= words <= 700:
            errors.append(f"{p.relative_to(HERE)}: {words} words")
        first = p.read_text(encoding="utf-8").splitlines()[0]
        if p.suffix == ".md" and not first.startswith("# "):
            errors.append(f"{p.relative_to(HERE)}: no '# Title' first line")

    qa = load_jsonl("qa.jsonl", errors)
    if len(qa) != EXPECTED["qa"]:
        errors.append(f"qa.jsonl: {len(qa)} rows, expected {EXPECTED['qa']}")
    ids = [q.get("id") for q in qa]
    if len(set(ids)) != len(ids):
        errors.append("qa.jsonl: duplicate ids")
    for q in qa:
        src = HERE / q["source"]
        if not src.is_file():
            errors.append(f"{q['id']}: source {q['source']} missing")
            continue
        if q["answer"].lower() not in text_of(src).lower():
            errors.append(f"{q['id']}: answer {q['answer']!r} not in {q['source']}")
    n_sources = len({q["source"] for q in qa})
    if n_sources < EXPECTED["qa_sources_min"]:
        errors.append(f"qa.jsonl covers {n_sources} documents, expected >= {EXPECTED['qa_sources_min']}")

    ins = load_jsonl("instructions.jsonl", errors)
    if len(ins) != EXPECTED["instructions"]:
        errors.append(f"instructions.jsonl: {len(ins)} rows, expected {EXPECTED['instructions']}")
    for n, r in enumerate(ins, 1):
        roles = [m.get("role") for m in r.get("messages", [])]
        if roles != ["system", "user", "assistant"] or not all(m.get("content") for m in r["messages"]):
            errors.append(f"instructions.jsonl:{n}: bad messages")
        elif len(r["messages"][2]["content"].split()) >= 60:
            errors.append(f"instructions.jsonl:{n}: answer has 60+ words")

    al = load_jsonl("instructions_alpaca.jsonl", errors)
    if len(al) != EXPECTED["alpaca"]:
        errors.append(f"instructions_alpaca.jsonl: {len(al)} rows, expected {EXPECTED['alpaca']}")
    for n, r in enumerate(al, 1):
        if set(r) != {"instruction", "input", "output"} or not r["instruction"] or not r["output"]:
            errors.append(f"instructions_alpaca.jsonl:{n}: bad keys or empty fields")

    print(f"docs: {len(docs)} {dict(sorted(kinds.items()))}")
    print(f"qa.jsonl: {len(qa)} rows, {n_sources} distinct source documents")
    print(f"instructions.jsonl: {len(ins)} rows")
    print(f"instructions_alpaca.jsonl: {len(al)} rows")
    for e in errors:
        print("FAIL:", e)
    print("OK" if not errors else f"{len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
