"""Adapters behind the core's ports: Milvus (server or Lite) and the gRPC embedder."""
