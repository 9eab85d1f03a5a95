"""Tokenisation, loss masking, packing and bad-row accounting (real tokenizer, real Ray Data)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.errors import UserError
from training.config import DataSettings
from training.data import (
    IGNORE,
    build_datasets,
    collate,
    encode_chat,
    pack_batch,
    tokenize_batch,
    tokenizer_for,
)


def decode_labels(tok, labels):
    return tok.decode([x for x in labels if x != IGNORE])


def test_chat_loss_only_on_assistant_tokens(tiny_model_dir):
    tok = tokenizer_for(str(tiny_model_dir))
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Check the pump?"},
        {"role": "assistant", "content": "Yes, check the pump."},
        {"role": "user", "content": "And the valve?"},
        {"role": "assistant", "content": "Check the valve too."},
    ]
    ids, labels, truncated = encode_chat(tok, msgs, 512)
    assert not truncated and len(ids) == len(labels)
    learned = decode_labels(tok, labels)
    assert "Yes, check the pump." in learned and "Check the valve too." in learned
    assert "Be brief" not in learned and "Check the pump?" not in learned and "And the valve" not in learned
    assert labels[0] == IGNORE


@pytest.mark.parametrize(
    ("fmt", "row", "error"),
    [
        ("alpaca", {"instruction": "Name a part.", "input": "", "output": "The pump."}, ""),
        ("alpaca", {"instruction": "Name a part.", "input": "x"}, "'output' must be a non-empty string"),
        ("messages", {"messages": [{"role": "user", "content": "hi"}]}, "no assistant message"),
        ("messages", {"messages": [{"role": "robot", "content": "hi"}]}, "messages[0] needs role"),
        ("text", {"text": ""}, "'text' must be a non-empty string"),
        ("text", {"body": "x"}, "'text' must be a non-empty string"),
    ],
)
def test_row_validation(tiny_model_dir, fmt, row, error):
    out = tokenize_batch(pd.DataFrame([{"__line": json.dumps(row)}]), tokenizer=str(tiny_model_dir), fmt=fmt,
                         max_len=64, text_field="text")  # fmt: skip
    assert out["error"][0].startswith(error) and (error or out["error"][0] == "")


def test_alpaca_masks_the_prompt_and_truncation_is_reported(tiny_model_dir):
    row = {"instruction": "Describe the pump " * 20, "input": "", "output": "It moves water."}
    out = tokenize_batch(pd.DataFrame([{"__line": json.dumps(row)}]), tokenizer=str(tiny_model_dir), fmt="alpaca",
                         max_len=16, text_field="text")  # fmt: skip
    assert out["error"][0] == "truncation left no answer tokens; raise data.max_seq_len"
    out = tokenize_batch(pd.DataFrame([{"__line": json.dumps(row)}]), tokenizer=str(tiny_model_dir), fmt="alpaca",
                         max_len=1024, text_field="text")  # fmt: skip
    tok = tokenizer_for(str(tiny_model_dir))
    assert "It moves water." in decode_labels(tok, out["labels"][0])
    assert "Describe" not in decode_labels(tok, out["labels"][0])


def test_text_documents_are_split_not_lost(tiny_model_dir):
    out = tokenize_batch(pd.DataFrame([{"text": "check the valve " * 40}]), tokenizer=str(tiny_model_dir),
                         fmt="text", max_len=32, text_field="text")  # fmt: skip
    assert len(out) > 1 and all(len(x) <= 32 for x in out["input_ids"])
    assert out["input_ids"][0] == out["labels"][0]


def test_packing_fills_sequences_and_keeps_masks():
    batch = {
        "input_ids": [[1, 2, 3], [4, 5, 6, 7], [8, 9]],
        "labels": [[IGNORE, 2, 3], [IGNORE, IGNORE, 6, 7], [8, 9]],
    }
    out = pack_batch(batch, max_len=4)
    # the 1-token tail [9] is dropped: after the label shift it has nothing to predict (a NaN mean loss)
    assert [list(x) for x in out["input_ids"]] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert list(out["labels"][0]) == [IGNORE, 2, 3, IGNORE]
    out = pack_batch(batch, max_len=3)
    assert [list(x) for x in out["input_ids"]] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_packing_drops_sequences_without_answer_tokens():
    batch = {"input_ids": [[1, 2, 3, 4], [5, 6]], "labels": [[IGNORE] * 4, [IGNORE, 6]]}
    out = pack_batch(batch, max_len=2)
    assert [list(x) for x in out["input_ids"]] == [[5, 6]]


def test_collate_pads_with_ignored_labels():
    b = collate({"input_ids": [[5, 6, 7], [8]], "labels": [[IGNORE, 6, 7], [8]]}, pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["labels"][1].tolist() == [8, IGNORE, IGNORE] and b["attention_mask"][1].tolist() == [1, 0, 0]


def write(path: Path, rows: list[str]) -> str:
    path.write_text("\n".join(rows) + "\n")
    return str(path)


GOOD = json.dumps({"instruction": "Name a part.", "input": "", "output": "The pump."})


def test_bad_rows_counted_and_threshold_fails_with_examples(tiny_model_dir, ray_local, tmp_path):
    path = write(tmp_path / "a.jsonl", [GOOD] * 18 + ["{oops", json.dumps({"instruction": "x"})])
    settings = DataSettings(
        path=path, format="alpaca", max_seq_len=64, validation_fraction=0.2, max_bad_fraction=0.2
    )
    train, val, report = build_datasets(settings, str(tiny_model_dir), num_workers=2)
    assert (report.rows, report.bad_rows) == (20, 2)
    assert report.train_sequences + report.validation_sequences == 18 and val is not None
    assert any("not valid JSON" in e for e in report.bad_examples)
    strict = settings.model_copy(update={"max_bad_fraction": 0.05})
    with pytest.raises(UserError, match=r"2 of 20 rows do not match format 'alpaca' .*not valid JSON"):
        build_datasets(strict, str(tiny_model_dir), num_workers=2)


def test_missing_data_path_is_a_user_error(tiny_model_dir, ray_local, tmp_path):
    with pytest.raises(UserError, match="data.path: .* does not exist"):
        build_datasets(DataSettings(path=str(tmp_path / "none.jsonl")), str(tiny_model_dir), num_workers=2)


def test_shipped_example_corpus_tokenizes(tiny_model_dir, ray_local):
    """Smoke test on examples/ (the only test that reads it): the shipped configs' data is usable."""
    repo = Path(__file__).resolve().parents[2]
    chat, alpaca = repo / "examples" / "instructions.jsonl", repo / "examples" / "instructions_alpaca.jsonl"
    assert chat.is_file() and alpaca.is_file(), "examples/ ships these files; a rename must update this test"
    settings = DataSettings(path=str(chat), format="messages", max_seq_len=256)
    _, _, report = build_datasets(settings, str(tiny_model_dir), 2)
    assert report.bad_rows == 0 and report.train_sequences > 10, report
    lines = [x for x in alpaca.read_text().splitlines() if x.strip()]
    out = tokenize_batch(pd.DataFrame({"__line": lines}), tokenizer=str(tiny_model_dir), fmt="alpaca", max_len=256,
                         text_field="text")  # fmt: skip
    assert (out["error"] == "").all(), out["error"].unique()
