"""Datasets: read with Ray Data, validate and tokenise rows, mask prompts, pack, split off validation.

Runs on the driver before workers start, so malformed rows and truncation are counted and reported (with
examples) up front; the run fails only if too many rows are bad. Workers receive token ids through
`ray.train.get_dataset_shard` and pad them per micro-batch (`collate`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import storage
from core.cli import log
from core.errors import UserError

if TYPE_CHECKING:
    import ray.data

    from training.config import DataSettings

IGNORE = -100
ROLES = {"system", "user", "assistant"}
TEXT_SUFFIXES = {".txt", ".md"}
_TOKENIZERS: dict[str, Any] = {}


@dataclass
class DataReport:
    """What happened to the rows: shown to the user and stored with the adapter."""

    rows: int = 0
    bad_rows: int = 0
    bad_examples: list[str] = field(default_factory=list)
    truncated: int = 0
    train_sequences: int = 0
    validation_sequences: int = 0
    tokens: int = 0
    fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def tokenizer_for(path: str):
    """One tokenizer per process and model (Ray Data tasks and workers reuse it)."""
    if path not in _TOKENIZERS:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        _TOKENIZERS[path] = tok
    return _TOKENIZERS[path]


def render(tok, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """Chat text via the tokenizer's template; a plain fallback for base models without one."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    text = "".join(f"### {m['role']}:\n{m['content']}\n{tok.eos_token or ''}\n" for m in messages)
    return text + ("### assistant:\n" if add_generation_prompt else "")


def _check_messages(msgs: Any) -> str:
    if hasattr(msgs, "tolist"):
        msgs = msgs.tolist()
    if not isinstance(msgs, list) or not msgs:
        return "'messages' must be a non-empty list"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return f"messages[{i}] needs role (system/user/assistant) and string content"
    if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
        return "no assistant message with content (nothing to learn)"
    return ""


def to_messages(row: dict[str, Any], fmt: str) -> tuple[list[dict[str, str]] | None, str]:
    """Normalise a chat or instruction row to messages; return (messages, error)."""
    if fmt == "messages":
        msgs = row.get("messages")
        err = "missing 'messages'" if msgs is None else _check_messages(msgs)
        return (None, err) if err else ([dict(m) for m in list(msgs)], "")
    instr, inp, out = row.get("instruction"), row.get("input") or "", row.get("output")
    if not isinstance(instr, str) or not instr.strip():
        return None, "'instruction' must be a non-empty string"
    if not isinstance(out, str) or not out.strip():
        return None, "'output' must be a non-empty string"
    if not isinstance(inp, str):
        return None, "'input' must be a string"
    user = instr + (f"\n\n{inp}" if inp.strip() else "")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": out}], ""


def encode_chat(tok, msgs: list[dict[str, str]], max_len: int) -> tuple[list[int], list[int], bool]:
    """Token ids and labels with loss only on assistant turns (-100 elsewhere); truncated to max_len."""
    ids = tok(render(tok, msgs), add_special_tokens=False)["input_ids"]
    labels = [IGNORE] * len(ids)
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        start = len(
            tok(render(tok, msgs[:i], add_generation_prompt=True), add_special_tokens=False)["input_ids"]
        )
        end = len(tok(render(tok, msgs[: i + 1]), add_special_tokens=False)["input_ids"])
        labels[start:end] = ids[start:end]
    return ids[:max_len], labels[:max_len], len(ids) > max_len


def _parse(row: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    if "__line" not in row:
        return row, ""
    line = row["__line"]
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return None, f"not valid JSON ({exc.msg})"
    return (obj, "") if isinstance(obj, dict) else (None, "a JSON line must be an object")


def tokenize_batch(batch, *, tokenizer: str, fmt: str, max_len: int, text_field: str):
    """Ray Data map_batches function (pandas in, pandas out); malformed rows carry an `error`."""
    import pandas as pd

    tok = tokenizer_for(tokenizer)
    out: dict[str, list] = {"input_ids": [], "labels": [], "truncated": [], "error": [], "example": []}

    def add(ids, labels, trunc, err, raw):
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["truncated"].append(trunc)
        out["error"].append(err)
        out["example"].append(raw[:200] if err else "")

    for raw in batch.to_dict("records"):
        shown = raw.get("__line") if "__line" in raw else json.dumps(raw, default=str)
        row, err = _parse(raw)
        if err:
            add([], [], False, err, shown)
            continue
        if fmt == "text":
            text = row.get(text_field)
            if not isinstance(text, str) or not text.strip():
                add([], [], False, f"'{text_field}' must be a non-empty string", shown)
                continue
            ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            for s in range(0, len(ids), max_len):  # long documents become several sequences
                if len(ids[s : s + max_len]) >= 2:  # a 1-token tail has nothing to predict after the shift
                    add(ids[s : s + max_len], ids[s : s + max_len], False, "", shown)
            continue
        msgs, err = to_messages(row, fmt)
        if err:
            add([], [], False, err, shown)
            continue
        ids, labels, trunc = encode_chat(tok, msgs, max_len)
        if all(x == IGNORE for x in labels[1:]):  # labels shift by one: the first can never be predicted
            add([], [], trunc, "truncation left no answer tokens; raise data.max_seq_len", shown)
            continue
        add(ids, labels, trunc, "", shown)
    return pd.DataFrame(out)


def pack_batch(batch, *, max_len: int):
    """Concatenate examples into max_len sequences (labels keep their masks)."""
    import pandas as pd

    ids_out, lab_out, ids_buf, lab_buf = [], [], [], []
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        ids_buf.extend(list(ids))
        lab_buf.extend(list(labels))
        while len(ids_buf) >= max_len:
            if any(x != IGNORE for x in lab_buf[1:max_len]):
                ids_out.append(ids_buf[:max_len])
                lab_out.append(lab_buf[:max_len])
            ids_buf, lab_buf = ids_buf[max_len:], lab_buf[max_len:]
    if any(x != IGNORE for x in lab_buf[1:]):  # keep a tail only if it still has something to predict
        ids_out.append(ids_buf)
        lab_out.append(lab_buf)
    return pd.DataFrame({"input_ids": ids_out, "labels": lab_out})


def read_rows(path: str, fmt: str) -> ray.data.Dataset:
    """jsonl lines (parsed later, so a broken line is one bad row), parquet, or a folder of text files."""
    import ray.data

    local = not storage.is_remote(path)
    if local and not Path(path).exists():
        raise UserError(f"data.path: {path} does not exist")
    if local:  # read tasks run in other processes (other working directories): pass absolute paths
        path = str(Path(path).expanduser().resolve())
    if local and Path(path).is_dir():
        files = sorted(str(p) for p in Path(path).rglob("*") if p.suffix in TEXT_SUFFIXES)
        if not files:
            raise UserError(f"data.path: folder {path} holds no .txt or .md files")
        if fmt != "text":
            raise UserError(f"data.path: a folder of text files needs data.format 'text' (got {fmt!r})")
        ds = ray.data.read_binary_files(files)
        return ds.map(lambda r: {"text": r["bytes"].decode("utf-8", errors="replace")})
    if path.endswith(".parquet"):
        return ray.data.read_parquet(path)
    if path.endswith((".jsonl", ".json")):
        return (
            ray.data.read_text(path)
            .map(lambda r: {"__line": r["text"]})
            .filter(lambda r: r["__line"].strip() != "")
        )
    if path.endswith((".txt", ".md")) and fmt == "text":
        return ray.data.read_text(path).filter(lambda r: r["text"].strip() != "")
    raise UserError(f"data.path: {path}: use a .jsonl, .parquet, .txt/.md file or a folder of text files")


def fingerprint(path: str, settings: DataSettings) -> str:
    """Content hash of the dataset plus the settings that shape the tokens (stored in adapter metadata)."""
    h = hashlib.sha256(json.dumps(settings.model_dump(), sort_keys=True).encode())
    p = Path(path)
    if storage.is_remote(path):
        h.update(path.encode())
    else:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build_datasets(
    settings: DataSettings, tokenizer: str, num_workers: int
) -> tuple[ray.data.Dataset, ray.data.Dataset | None, DataReport]:
    """Tokenise, report bad and truncated rows, pack, split. Raises UserError if too many rows are bad."""
    import ray.data

    # Block order must not depend on scheduling: the seeded split and the resumed data position (a count of
    # consumed batches) are only reproducible across re-runs of the same run name if the order is.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    rows = read_rows(settings.path, settings.format)
    kwargs = {
        "tokenizer": tokenizer,
        "fmt": settings.format,
        "max_len": settings.max_seq_len,
        "text_field": settings.text_field,
    }
    tokenized = rows.map_batches(
        tokenize_batch, fn_kwargs=kwargs, batch_format="pandas", batch_size=256
    ).materialize()
    report = DataReport(fingerprint=fingerprint(settings.path, settings))
    report.rows = tokenized.count()
    bad = tokenized.filter(lambda r: r["error"] != "")
    report.bad_rows = bad.count()
    report.bad_examples = [f"{r['error']}: {r['example']}" for r in bad.take(3)]
    if report.rows == 0:
        raise UserError(f"data.path: {settings.path} has no rows")
    if report.bad_rows:
        share = report.bad_rows / report.rows
        msg = f"{report.bad_rows} of {report.rows} rows do not match format {settings.format!r}"
        if share > settings.max_bad_fraction:
            examples = "; ".join(report.bad_examples)
            raise UserError(
                f"{msg} ({share:.0%} > data.max_bad_fraction {settings.max_bad_fraction:.0%}); e.g. {examples}"
            )
        log(f"warning: {msg}; skipped. e.g. {report.bad_examples[0]}")
    good = tokenized.filter(lambda r: r["error"] == "")
    report.truncated = int(good.sum("truncated") or 0) if report.rows > report.bad_rows else 0
    if report.truncated:
        log(
            f"note: {report.truncated} examples were longer than data.max_seq_len={settings.max_seq_len} and truncated"
        )
    good = good.select_columns(["input_ids", "labels"])
    if settings.packing:
        good = good.map_batches(
            pack_batch, fn_kwargs={"max_len": settings.max_seq_len}, batch_format="pandas"
        )
    good = good.materialize()
    n = good.count()
    val = None
    if settings.validation_fraction > 0 and n * settings.validation_fraction >= num_workers:
        train, val = good.train_test_split(
            test_size=settings.validation_fraction, shuffle=True, seed=settings.seed
        )
        report.validation_sequences = val.count()
    else:
        train = good
        if settings.validation_fraction > 0:
            log(
                f"note: too few sequences ({n}) for a validation split across {num_workers} workers; eval skipped"
            )
    report.train_sequences = train.count()
    if report.train_sequences < num_workers:
        raise UserError(
            f"data.path: only {report.train_sequences} usable sequences for {num_workers} workers"
        )
    report.tokens = int(train.map(lambda r: {"n": len(r["input_ids"])}).sum("n"))
    return train, val, report


def collate(batch: dict[str, Any], pad_id: int):
    """Pad a numpy batch of variable-length id lists into tensors (right padding, labels -100)."""
    import torch

    seqs = [list(x) for x in batch["input_ids"]]
    labs = [list(x) for x in batch["labels"]]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labs, strict=True)):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        labels[i, : len(lab)] = torch.tensor(lab, dtype=torch.long)
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
