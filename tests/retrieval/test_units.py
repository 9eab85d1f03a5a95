"""Filters, chunking, loading and config: the pieces below Milvus, with the real MiniLM tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import UserError
from retrieval import RetrievalConfig
from retrieval.chunking import chunk_document, split_tokens
from retrieval.documents import Document, FileProblem, discover, load
from retrieval.filters import build_filter
from tests.retrieval.conftest import PDF_LINES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("source=docs/x.md", 'source == "docs/x.md"'),
        ("source == docs/x.md", 'source == "docs/x.md"'),
        ("source != a.md", 'source != "a.md"'),
        ("source like docs/policies/%", 'source LIKE "docs/policies/%"'),
        ("title='Safety rules'", 'title == "Safety rules"'),
        ("chunk=3", "chunk == 3"),
        ('source=x" or source != "', 'source == "x\\" or source != \\""'),
        ("source=a\\", 'source == "a\\\\"'),
        ({"source": "a.md", "title": {"like": "Gear%"}}, 'source == "a.md" and title LIKE "Gear%"'),
        ({"source": ["a.md", "b.md"]}, '(source == "a.md" or source == "b.md")'),
        (["source=a.md", "chunk!=0"], 'source == "a.md" and chunk != 0'),
        (None, ""),
    ],
)
def test_filters_build_quoted_expressions(spec, expected):
    assert build_filter(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "text != 1",  # not a filterable field
        "source in ['a']",  # raw Milvus syntax is not accepted
        "id like %",
        "chunk=1 or 1==1",
        "chunk like 3",
        "source=a\nor chunk > 0",
        "vector=1",
        "just words",
        {"source": 5},
        {"source": {"in": ["a"]}},
        {"text": "x"},
        {"source": []},
        42,
    ],
)
def test_filters_reject_anything_else(spec):
    with pytest.raises(UserError):
        build_filter(spec)


def test_split_tokens_respects_size_and_overlap(embedder):
    tok = embedder.tokenizer
    text = " ".join(f"word{i} alpha beta." for i in range(120))
    pieces = split_tokens(text, tok, size=40, overlap=10)
    assert len(pieces) > 5
    for p in pieces:
        assert len(tok(p, add_special_tokens=False)["input_ids"]) <= 40
    # consecutive windows share their overlap: the start of window i+1 occurs at the end of window i
    first_words = pieces[1].split()[:2]
    assert " ".join(first_words) in pieces[0]
    assert pieces[-1].endswith("beta.")


def test_chunk_ids_are_deterministic_and_content_derived(embedder):
    doc = Document("a.md", "A", [("A > B", "one two three " * 50)], "h")
    a = chunk_document(doc, embedder.tokenizer, 32, 8)
    b = chunk_document(doc, embedder.tokenizer, 32, 8)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert len({r["id"] for r in a}) == len(a)
    other = chunk_document(Document("b.md", "A", doc.sections, "h"), embedder.tokenizer, 32, 8)
    assert not {r["id"] for r in a} & {r["id"] for r in other}
    assert [r["chunk"] for r in a] == list(range(len(a)))


def test_loaders_read_every_format(corpus: Path):
    files, problems = discover([str(corpus)], corpus)
    assert not problems
    docs = {s: load(p, s) for p, s in files}
    assert set(docs) == {
        "manuals/gearbox.md",
        "manuals/yaw.pdf",
        "policies/climbing.txt",
        "procedures/blade.html",
    }
    md, pdf, html = docs["manuals/gearbox.md"], docs["manuals/yaw.pdf"], docs["procedures/blade.html"]
    assert md.title == "Gearbox Manual" and md.sections[0][0] == "Gearbox Manual > Oil change"
    assert all(line in " ".join(t for _, t in pdf.sections) for line in PDF_LINES)
    assert html.title == "Blade Inspection"
    assert "Blade inspection > Lightning receptors" in [h for h, _ in html.sections]
    assert "var x" not in " ".join(t for _, t in html.sections)


def test_bad_files_are_reasons_not_exceptions(tmp_path: Path):
    (tmp_path / "empty.md").write_text("  \n")
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02\x03 binary")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "x.docx").write_bytes(b"PK\x03\x04")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (tmp_path / "dangling.md").symlink_to(tmp_path / "missing-target.md")
    files, problems = discover([str(tmp_path), str(tmp_path / "nope")], tmp_path)
    results = {s: load(p, s) for p, s in files}
    assert all(isinstance(r, FileProblem) for r in results.values())
    reasons = {s: r.reason for s, r in results.items()}
    assert reasons["empty.md"] == "empty file"
    assert "binary" in reasons["bin.txt"]
    assert "UTF-8" in reasons["latin.txt"]
    assert "unsupported" in reasons["x.docx"]
    assert results["broken.pdf"].is_error and results["dangling.md"].is_error
    assert problems[0].source.endswith("nope") and problems[0].is_error


def test_config_rules_and_shipped_yaml():
    with pytest.raises(UserError, match="chunk_overlap"):
        RetrievalConfig.from_dict({"chunk_tokens": 32, "chunk_overlap": 32})
    with pytest.raises(UserError, match="collection"):
        RetrievalConfig.from_dict({"collection": "bad name; drop"})
    with pytest.raises(UserError, match="unknown config key"):
        RetrievalConfig.from_dict({}, ["chunk_size=3"])
    shipped = sorted((REPO / "retrieval" / "configs").glob("*.yaml"))
    assert shipped
    for path in shipped:
        assert path.read_text().startswith("# python -m retrieval ")
        RetrievalConfig.from_file(path)


def test_filter_lists_and_their_parts() -> None:
    """A list ANDs its parts (the serving router passes [route filter, request filter]); each part is its own
    group, so a part's own 'or' cannot leak out and widen the other."""
    expr = build_filter(["source=a", {"title": "x", "chunk": [1, 2]}])
    assert expr == 'source == "a" and (title == "x" and (chunk == 1 or chunk == 2))'
    with pytest.raises(UserError):
        build_filter(["source=a", {"bogus": 1}])
