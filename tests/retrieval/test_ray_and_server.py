"""The Ray Data path and the server URI path, against real Ray and a real Milvus (Lite's gRPC server on TCP)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.net import free_port
from retrieval import RetrievalConfig, Retriever
from tests.milvus_server import MilvusServer


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory: pytest.TempPathFactory):
    """A Milvus reached over http://127.0.0.1:PORT like a real deployment (Milvus Lite's gRPC server)."""
    server = MilvusServer(tmp_path_factory.mktemp("milvus-server"), free_port()).start()
    yield server.uri
    server.stop()


def _all_ids(r: Retriever, name: str) -> dict[str, set[str]]:
    rows = r.store._query_all(name, "chunk >= 0", ["id", "source"])
    out: dict[str, set[str]] = {}
    for row in rows:
        out.setdefault(row["source"], set()).add(row["id"])
    return out


@pytest.fixture(scope="module")
def single_ids(retriever: Retriever, corpus: Path) -> dict[str, set[str]]:
    """Reference: the chunk ids the single-process path writes for the corpus."""
    retriever.ingest_paths([str(corpus)], collection="ref_single")
    return _all_ids(retriever, "ref_single")


def test_server_uri_uses_the_same_code(milvus_server: str, corpus: Path, embedder, single_ids):
    cfg = RetrievalConfig(uri=milvus_server, source_root=str(corpus), chunk_tokens=64, chunk_overlap=16)
    r = Retriever(cfg, embedder)
    try:
        report = r.ingest_paths([str(corpus)], collection="server_docs")
        assert report["files"] == 4 and _all_ids(r, "server_docs") == single_ids
        assert r.search("yaw bearing grease", collection="server_docs")[0].source == "manuals/yaw.pdf"
        assert (
            r.search("lightning receptor", mode="bm25", collection="server_docs")[0].source
            == "procedures/blade.html"
        )
    finally:
        r.close()


@pytest.mark.slow
def test_ray_lite_path_matches_single_process(
    ray_local, retriever: Retriever, corpus: Path, tmp_path: Path, single_ids
):
    """Driver-side writes (Lite): same ids as the single-process path, unchanged files skipped, stale ids removed."""
    root = tmp_path / "c"
    shutil.copytree(corpus, root)
    (root / "notes.docx").write_bytes(b"PK\x03\x04")
    gear = root / "manuals" / "gearbox.md"
    current = gear.read_text()
    cfg = retriever.cfg.model_copy(update={"source_root": str(root), "ray_actors": 1})
    r = Retriever(cfg, retriever.embedder, retriever.store)
    gear.write_text(current.replace("12 months", "6 months"))  # an older version is in the collection first
    r.ingest_paths([str(root)], collection="ray_lite")
    gear.write_text(current)
    old_gear = _all_ids(r, "ray_lite")["manuals/gearbox.md"]

    report = r.ingest_paths([str(root)], collection="ray_lite", ray=True)
    assert (report["files"], report["unchanged"]) == (1, 3)
    assert report["chunks"] == len(single_ids["manuals/gearbox.md"])
    assert report["deleted"] == len(old_gear - single_ids["manuals/gearbox.md"]) > 0
    assert [p["source"] for p in report["skipped"]] == ["notes.docx"]
    assert _all_ids(r, "ray_lite") == single_ids
    assert r.search("gearbox oil interval", collection="ray_lite")[0].source == "manuals/gearbox.md"


@pytest.mark.slow
def test_ray_server_path_writes_from_workers(
    ray_local, milvus_server: str, corpus: Path, embedder, single_ids
):
    cfg = RetrievalConfig(
        uri=milvus_server, source_root=str(corpus), chunk_tokens=64, chunk_overlap=16, ray_actors=1
    )
    r = Retriever(cfg, embedder)
    try:
        report = r.ingest_paths([str(corpus)], collection="ray_server", ray=True)
        assert report["files"] == 4 and not report["errors"]
        assert _all_ids(r, "ray_server") == single_ids
        hits = r.search("how many technicians for a tower climb", collection="ray_server")
        assert hits[0].source == "policies/climbing.txt"
    finally:
        r.close()
