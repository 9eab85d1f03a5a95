"""Retrieval: company documents chunked, embedded and stored in Milvus; dense, BM25 and hybrid search.

Public API (the serving layer codes against it):
    from retrieval import Retriever, RetrievalConfig, Hit
"""

from retrieval.config import RetrievalConfig
from retrieval.retriever import Hit, IngestReport, Retriever

__all__ = ["Hit", "IngestReport", "RetrievalConfig", "Retriever"]
