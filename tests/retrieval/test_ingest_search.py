"""Ingest and search against real Milvus Lite with the real MiniLM embedder."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from retrieval import Hit, RetrievalConfig, Retriever

QUERIES = {  # distinctive query -> the only source that answers it
    "how often do I change the gearbox oil": "manuals/gearbox.md",
    "how many technicians for a tower climb": "policies/climbing.txt",
    "lightning receptor resistance milliohm": "procedures/blade.html",
    "yaw bearing grease interval": "manuals/yaw.pdf",
}


def _count(r: Retriever, name: str) -> int:
    return r.store.count(name)


def _ids(r: Retriever, name: str, source: str) -> set[str]:
    return r.store.ids_by_source(name, [source]).get(source, set())


@pytest.fixture(scope="module")
def docs_collection(retriever: Retriever, corpus: Path) -> str:
    report = retriever.ingest_paths([str(corpus)], collection="docs_all")
    assert report["files"] == 4 and report["chunks"] >= 5 and not report["errors"] and not report["skipped"]
    return "docs_all"


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_each_mode_finds_the_right_source(retriever: Retriever, docs_collection: str, mode: str):
    for query, source in QUERIES.items():
        hits = retriever.search(query, top_k=3, mode=mode, collection=docs_collection)
        assert hits and isinstance(hits[0], Hit), (mode, query)
        assert hits[0].source == source, (mode, query, [h.source for h in hits])
        assert hits[0].score > 0 and hits[0].title and hits[0].id
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    d = hits[0].to_dict()
    assert set(d) >= {"source", "chunk", "text", "score", "title", "id"}


def test_filters_restrict_and_cannot_inject(retriever: Retriever, docs_collection: str):
    hits = retriever.search("oil", top_k=10, filter="source like policies/%", collection=docs_collection)
    assert hits and {h.source for h in hits} == {"policies/climbing.txt"}
    hits = retriever.search("oil", top_k=10, filter={"source": "manuals/yaw.pdf"}, collection=docs_collection)
    assert {h.source for h in hits} == {"manuals/yaw.pdf"}
    # An injection attempt is a literal string that matches no source, so nothing comes back.
    for attack in ['manuals/gearbox.md" or source != "', 'x" || chunk >= 0 || source == "y']:
        assert retriever.search("oil", filter=f"source={attack}", collection=docs_collection) == []
        assert retriever.search("oil", filter={"source": attack}, collection=docs_collection) == []
    with pytest.raises(UserError, match="filter"):
        retriever.search("oil", filter="chunk >= 0 or 1 == 1", collection=docs_collection)


def test_quotes_in_source_names_round_trip(retriever: Retriever, collection: str):
    src = 'odd "quoted" name\\x.md'
    retriever.ingest_texts(
        [{"source": src, "text": "The anemometer heater fuse is F12."}], collection=collection
    )
    hits = retriever.search("anemometer heater fuse", filter={"source": src}, collection=collection)
    assert [h.source for h in hits] == [src]
    assert retriever.delete_source(src, collection=collection) == 1


def test_reingest_is_idempotent_change_replaces_and_delete_removes(
    retriever: Retriever, corpus: Path, tmp_path: Path, collection: str
):
    root = tmp_path / "c"
    shutil.copytree(corpus, root)
    cfg = retriever.cfg.model_copy(update={"source_root": str(root)})
    r = Retriever(cfg, retriever.embedder, retriever.store)  # same client and model, another source root
    first = r.ingest_paths([str(root)], collection=collection)
    total = _count(r, collection)
    assert first["chunks"] == total and first["files"] == 4
    before = {s: _ids(r, collection, s) for s in QUERIES.values()}

    again = r.ingest_paths([str(root)], collection=collection)
    assert (again["files"], again["chunks"], again["unchanged"], again["deleted"]) == (0, 0, 4, 0)
    assert _count(r, collection) == total
    assert {s: _ids(r, collection, s) for s in QUERIES.values()} == before

    gear = root / "manuals" / "gearbox.md"
    gear.write_text(gear.read_text().replace("950 newton metres", "1200 newton metres"))
    changed = r.ingest_paths([str(root)], collection=collection)
    assert (changed["files"], changed["unchanged"]) == (1, 3)
    new_ids = _ids(r, collection, "manuals/gearbox.md")
    assert new_ids != before["manuals/gearbox.md"] and _count(r, collection) == total
    assert changed["deleted"] == len(before["manuals/gearbox.md"] - new_ids)
    texts = " ".join(
        h.text
        for h in r.search("bolt torque", top_k=10, filter="source=manuals/gearbox.md", collection=collection)
    )
    assert "1200 newton metres" in texts and "950" not in texts
    for s in ("policies/climbing.txt", "procedures/blade.html", "manuals/yaw.pdf"):
        assert _ids(r, collection, s) == before[s]

    removed = r.delete_source(str(gear), collection=collection)  # a path is normalised like at ingest
    assert removed == len(new_ids) and _count(r, collection) == total - removed
    assert all(
        h.source != "manuals/gearbox.md" for h in r.search("gearbox oil", top_k=10, collection=collection)
    )
    assert r.delete_source("manuals/gearbox.md", collection=collection) == 0


def test_bad_files_reported_and_rest_ingested(retriever: Retriever, tmp_path: Path, collection: str):
    (tmp_path / "good.md").write_text("# Converter\nThe converter cooling pump runs at 3 bar.")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blob.md").write_bytes(b"\x00\xff\x00binary")
    (tmp_path / "notes.docx").write_bytes(b"PK\x03\x04")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7 garbage")
    report = retriever.ingest_paths([str(tmp_path)], collection=collection)
    assert report["files"] == 1 and report["chunks"] == 1
    skipped = {p["source"].rsplit("/", 1)[-1] for p in report["skipped"]}
    errors = {p["source"].rsplit("/", 1)[-1] for p in report["errors"]}
    assert skipped == {"empty.txt", "blob.md", "notes.docx"} and errors == {"broken.pdf"}
    assert report.ingested_anything


def test_unstorable_source_paths_are_skipped_not_fatal(retriever: Retriever, tmp_path: Path, collection: str):
    """A control character or a >1,024-character path skips that file; the rest of the batch is ingested."""
    (tmp_path / "good.md").write_text("# Converter\nThe converter cooling pump runs at 3 bar.")
    (tmp_path / "bad\nname.md").write_text("# Bad\nA newline in the file name.")
    deep = tmp_path.joinpath(*(["d" * 200] * 6))  # relative source ~1,210 characters, each part legal
    deep.mkdir(parents=True)
    (deep / "long.md").write_text("# Long\nA very deep file.")
    report = retriever.ingest_paths([str(tmp_path)], collection=collection)
    assert report["files"] == 1 and report["chunks"] == 1 and not report["errors"]
    reasons = " | ".join(p["reason"] for p in report["skipped"])
    assert len(report["skipped"]) == 2, report["skipped"]
    assert "control characters" in reasons and "limit is 1024" in reasons
    assert any("\\n" in p["source"] for p in report["skipped"])  # shown escaped, printable
    via_api = retriever.ingest_texts(
        [{"source": "tab\there.md", "text": "x y z"}, {"source": "ok.md", "text": "fine"}],
        collection=collection,
    )
    assert via_api["files"] == 1 and len(via_api["skipped"]) == 1


class FailingEmbedder:
    """Named fake: wraps the real embedder and raises on the Nth call, like a worker dying mid-ingest."""

    def __init__(self, real, fail_on_call: int) -> None:
        self.real, self.name, self.dim, self.tokenizer = real, real.name, real.dim, real.tokenizer
        self.calls, self.fail_on_call = 0, fail_on_call

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("injected embedder failure")
        return self.real.embed(texts)


def test_crash_mid_ingest_keeps_old_chunks(retriever: Retriever, embedder, collection: str):
    body = "\n".join(
        f"## Step {i}\nStep {i}: set brake pressure to {i} bar and log it. " * 4 for i in range(40)
    )
    retriever.ingest_texts(
        [{"source": "manual.md", "text": "# Manual\nThe old hydraulic brake pressure is 180 bar."}],
        collection=collection,
    )
    old_ids = _ids(retriever, collection, "manual.md")
    assert old_ids
    failing = FailingEmbedder(embedder, fail_on_call=2)
    r = Retriever(retriever.cfg.model_copy(update={"embed_batch_size": 8}), failing, retriever.store)
    with pytest.raises(RuntimeError, match="injected"):
        r.ingest_texts([{"source": "manual.md", "text": body}], collection=collection)
    assert failing.calls == 2  # the first batch was embedded, then the failure
    assert _ids(retriever, collection, "manual.md") == old_ids
    hits = retriever.search("hydraulic brake pressure", collection=collection)
    assert hits and hits[0].source == "manual.md" and "180 bar" in hits[0].text


def test_mismatched_embedder_is_refused(retriever: Retriever, embedder, collection: str):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense

    class Dense128:
        """A real, different embedder: MiniLM plus a 384->128 Dense layer (shares MiniLM's modules)."""

        name, dim, tokenizer = "minilm-dense128", 128, embedder.tokenizer

        def __init__(self) -> None:
            self.model = SentenceTransformer(modules=[*embedder.model, Dense(384, 128)], device="cpu")

        def embed(self, texts: list[str]) -> np.ndarray:
            return np.asarray(self.model.encode(texts, normalize_embeddings=True), dtype=np.float32)

    other = Retriever(retriever.cfg, Dense128(), retriever.store)
    report = other.ingest_texts(
        [{"source": "x.md", "text": "Pitch motor brushes wear out."}], collection=collection
    )
    assert report["chunks"] == 1 and len(other.search("pitch motor", collection=collection)) == 1
    retriever._checked.discard(collection)
    with pytest.raises(UserError, match=r"minilm-dense128.*128-d.*all-MiniLM-L6-v2.*384-d"):
        retriever.search("pitch motor", collection=collection)
    with pytest.raises(UserError, match="minilm-dense128"):
        retriever.ingest_texts([{"source": "y.md", "text": "Anything."}], collection=collection)


def test_missing_collection_and_bad_arguments(retriever: Retriever, docs_collection: str):
    with pytest.raises(UserError, match="'no_such_collection' does not exist"):
        retriever.search("anything", collection="no_such_collection")
    with pytest.raises(UserError, match="mode"):
        retriever.search("anything", mode="fuzzy")
    with pytest.raises(UserError, match="empty"):
        retriever.search("   ")
    with pytest.raises(UserError, match="top_k"):
        retriever.search("x", top_k=0)
    assert docs_collection in retriever.collections() and "no_such_collection" not in retriever.collections()


def test_concurrent_searches_agree(retriever: Retriever, docs_collection: str):
    queries = list(QUERIES) * 3
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(
            pool.map(lambda q: retriever.search(q, top_k=1, collection=docs_collection)[0].source, queries)
        )
    assert results == [QUERIES[q] for q in queries]


def test_unreachable_server_fails_fast():
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.perf_counter()
    with pytest.raises(UserError, match=f"cannot reach Milvus at http://127.0.0.1:{port}"):
        Retriever(RetrievalConfig(uri=f"http://127.0.0.1:{port}", connect_timeout_s=2))
    assert time.perf_counter() - start < 5
