"""Product search at catalog scale: the `ProductIndex` (exact, HNSW, IVF-PQ or any FAISS factory string; upsert,
delete, metadata filters; safe versioned files), recall evaluation against exact search, the embedding job behind
`commercemm embed` (products -> safetensors shards) and the export of those shards to a vector database."""

from ..pipelines.pipeline_commercemm_index import ProductIndex
from ..pipelines.pipeline_commercemm_shards import read_embedding_shards
from .evaluation import clustered_unit_vectors, recall_against_exact, top_k_ids


__all__ = ["ProductIndex", "clustered_unit_vectors", "read_embedding_shards", "recall_against_exact", "top_k_ids"]
