"""The vector store on Milvus: a server or cluster by URI, or Milvus Lite in a file; the same
code for both (Lite differences are in config.py).

Layout:
- `imagesearch_collections` and `imagesearch_claims`: the registry, one row per tenant
  collection with the embedding model it was built with and the key its rows carry (see
  registry.py for how creations and deletions stay apart). Milvus needs a vector field in
  every collection, so these carry a 2-d placeholder.
- `imagesearch_vectors_<fingerprint prefix>`: one Milvus collection per embedding model
  (schema.py). Rows are keyed "<collection key>/<external id>", so re-adding an id replaces
  it (upsert, never a duplicate). Thousands of tenant collections cost no Milvus collections,
  and every query is pruned to its tenant's rows: by the partition key on a server (except on
  Milvus 2.3, see config.ServerTraits), by a partition of its own on Milvus Lite (layout.py).
  The copy index (search_service.copy_index) is one more such space, 64-d, keyed the same
  way; deleting a tenant collection deletes its rows in every space.

Modules: store.py (blocking pymilvus calls), vector_store.py (the core's VectorStore port:
threads, deadlines and Milvus' errors translated), catalog.py (creating, loading and laying
out Milvus collections), expressions.py, layout.py, registry.py, schema.py, config.py (Lite's
and old servers' differences, Lite's flusher).
"""
