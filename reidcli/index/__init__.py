"""Searchable galleries: faiss index folders (flat, HNSW, IVF-PQ) and Milvus collections.

`reidcli.api.index_build`, `index_add`, `index_remove`, `index_info` and `search` are the entry
points; `reidcli.index.gallery` holds what the backends share.
"""
