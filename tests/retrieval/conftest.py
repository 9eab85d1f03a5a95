"""Retrieval fixtures: one real MiniLM embedder and one real Milvus Lite client per session.

Tests isolate themselves by collection name (Milvus Lite admits one process per file, so CLI subprocess
tests use files of their own). Documents are written by the tests; only the smoke test reads examples/.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from retrieval import RetrievalConfig, Retriever
from retrieval.embedder import SentenceTransformerEmbedder

DOCS = {
    "manuals/gearbox.md": """# Gearbox Manual

## Oil change
Change the gearbox oil every 12 months with ISO VG 320 synthetic oil. Drain the old oil while it is warm.

## Torque
Tighten the gearbox mounting bolts to 950 newton metres in a star pattern.
""",
    "policies/climbing.txt": "Tower climbing policy\n\nNever climb a tower alone. Two certified technicians "
    "must be present for every climb, and the rescue kit must be at the tower base.\n",
    "procedures/blade.html": """<html><head><title>Blade Inspection</title><script>var x = 1;</script></head>
<body><h1>Blade inspection</h1><p>Inspect the leading edge for erosion with a drone every spring.</p>
<h2>Lightning receptors</h2><p>Measure the lightning receptor resistance; it must stay below 50 milliohm.</p>
</body></html>""",
}
PDF_LINES = ["Yaw system service.", "Grease the yaw bearing every six months using lithium grease."]


def make_pdf(lines: list[str]) -> bytes:
    """A minimal valid one-page PDF with Helvetica text: hand-written objects with correct xref offsets."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({esc(line)}) Tj T*" for line in lines) + " ET"
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def write_docs(root: Path) -> Path:
    """The small test corpus (md, txt, html, pdf) under `root`; returns `root`."""
    for rel, text in DOCS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "manuals" / "yaw.pdf").write_bytes(make_pdf(PDF_LINES))
    return root


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_docs(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def lite_uri(session_data_dir: Path) -> str:
    return str(session_data_dir / "retrieval-tests.db")


@pytest.fixture(scope="session")
def retriever(lite_uri: str, corpus: Path, embedder: SentenceTransformerEmbedder):
    """One Retriever (one Milvus Lite client) for the session; sources are stored relative to `corpus`."""
    r = Retriever(
        RetrievalConfig(uri=lite_uri, source_root=str(corpus), chunk_tokens=64, chunk_overlap=16), embedder
    )
    yield r
    r.close()


_names = itertools.count()


@pytest.fixture
def collection() -> str:
    """A fresh collection name per test."""
    return f"t{next(_names)}"
