"""The four-mode evaluator: a client of any OpenAI-compatible endpoint (ours or another), scoring base, base+RAG,
adapter and adapter+RAG on a question set. It lives apart from `serving/` because it only speaks HTTP to it."""
