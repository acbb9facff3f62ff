"""The search service: collections, ingest and retrieval over Milvus, using the embedder."""
