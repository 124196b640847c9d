"""Hand the embedding shards of `commercemm embed` to a vector database: Qdrant (`pip install qdrant-client`, or the
`search` extra), a server (`QdrantClient(url=...)`) or its embedded local mode (`QdrantClient(path=...)`).

Each product becomes one point: id = a UUID derived from the product id (uuid5, so re-exporting a shard updates its
points instead of duplicating them), vector = its embedding of the chosen kind, payload = `{"product_id": ..., **its
metadata}`. `qdrant_search` queries the collection with the same filter syntax as `ProductIndex`
(`{"category": "mugs", "brand": ["acme", "zeta"]}`).

Example (in-memory Qdrant; a server is `QdrantClient(url="http://localhost:6333")`, local files
`QdrantClient(path="qdrant_data")`):
    >>> import tempfile
    >>> from datasets import Dataset
    >>> from qdrant_client import QdrantClient
    >>> from commercemm_hf import create_model_and_processor
    >>> from commercemm_hf.hub import save_hub_folder
    >>> from commercemm_hf.pipelines.pipeline_commercemm_shards import read_embedding_shards
    >>> from commercemm_hf.search.embedding_job import embed_products
    >>> from commercemm_hf.search.vector_store import export_to_qdrant, qdrant_search
    >>> model, processor = create_model_and_processor("tiny", texts=["red mug", "blue lamp"] * 5, vocab_size=300)
    >>> folder = save_hub_folder(model, processor, tempfile.mkdtemp())
    >>> rows = Dataset.from_dict({"product_id": ["p1", "p2", "p3"], "text": ["red mug", "blue lamp", "green mug"],
    ...                           "category": ["mugs", "lamps", "mugs"]})
    >>> shards = tempfile.mkdtemp()
    >>> _ = embed_products(folder, rows, shards, kinds=("text",), metadata_columns=("category",), progress=False)
    ... # doctest: +ELLIPSIS
    process 0: embedded 3 products in ... s into ...
    >>> client = QdrantClient(":memory:")
    >>> export_to_qdrant(shards, client, "products", kind="text")
    3
    >>> vectors, ids, metadata = next(read_embedding_shards(shards, "text"))  # p1's vector as the query
    >>> [hit["product_id"] for hit in qdrant_search(client, "products", vectors[:1], filter={"category": "mugs"})[0]]
    ['p1', 'p3']
"""

from __future__ import annotations

import uuid

import numpy as np

from ..pipelines.pipeline_commercemm_index import metadata_value
from ..pipelines.pipeline_commercemm_shards import read_embedding_shards, read_manifest


#: the namespace of the point ids: uuid5(PRODUCT_NAMESPACE, product id)
PRODUCT_NAMESPACE = uuid.UUID("0b6c4a52-8f0e-5d5e-9a34-6c6f6d6d6572")


def point_id(product_id: str) -> str:
    return str(uuid.uuid5(PRODUCT_NAMESPACE, str(product_id)))


def _models():
    try:
        from qdrant_client import models
    except ImportError as error:
        raise ImportError("The Qdrant export needs qdrant-client: pip install qdrant-client "
                          "(or commercemm-hf[search]).") from error
    return models


def export_to_qdrant(shards_folder, client, collection: str, kind: str = "multimodal", batch_size: int = 512) -> int:
    """Upsert every product of the shards (that has a `kind` embedding) into `collection`, creating it (cosine
    distance, the shards' dim) when missing; returns the number of products written."""
    models = _models()
    dim = read_manifest(shards_folder)["dim"]
    if client.collection_exists(collection):
        vectors = client.get_collection(collection).config.params.vectors
        if getattr(vectors, "size", None) != dim or getattr(vectors, "distance", None) != models.Distance.COSINE:
            raise ValueError(f"Qdrant collection {collection!r} holds {vectors}, not {dim}-dim cosine vectors: "
                             "export into another collection.")
    else:
        client.create_collection(collection, vectors_config=models.VectorParams(size=dim,
                                                                                distance=models.Distance.COSINE))
    written = 0
    for vectors, ids, metadata in read_embedding_shards(shards_folder, kind, expected_dim=dim):
        for start in range(0, len(ids), batch_size):
            points = [models.PointStruct(id=point_id(product_id), vector=vector.tolist(),
                                         payload={**(entry or {}), "product_id": product_id})
                      for product_id, vector, entry in zip(ids[start:start + batch_size],
                                                           vectors[start:start + batch_size],
                                                           metadata[start:start + batch_size])]
            client.upsert(collection, points=points, wait=True)
            written += len(points)
    return written


def qdrant_filter(filter: dict | None):
    """A `ProductIndex`-style filter (field -> value, or list of values) as a Qdrant `Filter`."""
    if not filter:
        return None
    models = _models()
    conditions = []
    for field, wanted in filter.items():
        if isinstance(wanted, (list, tuple, set, frozenset)):
            values = [metadata_value(value, field, "the filter") for value in wanted]
            conditions.append(models.FieldCondition(key=field, match=models.MatchAny(any=values)))
        else:
            value = metadata_value(wanted, field, "the filter")
            conditions.append(models.FieldCondition(key=field, match=models.MatchValue(value=value)))
    return models.Filter(must=conditions)


def qdrant_search(client, collection: str, queries, top_k: int = 10, filter: dict | None = None) -> list[list[dict]]:
    """`[{"product_id", "score"}, ...]` per query vector, best first, as `ProductIndex.query` returns them."""
    if hasattr(queries, "detach"):  # a torch tensor straight from get_*_features (it may require grad)
        queries = queries.detach().float().cpu().numpy()
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None]
    if not np.isfinite(queries).all():
        raise ValueError("Query vectors are NaN or infinite.")
    condition = qdrant_filter(filter)
    out = []
    for query in queries:
        points = client.query_points(collection, query=query.tolist(), limit=top_k, query_filter=condition,
                                     with_payload=["product_id"]).points
        out.append([{"product_id": point.payload["product_id"], "score": float(point.score)} for point in points])
    return out


__all__ = ["PRODUCT_NAMESPACE", "export_to_qdrant", "point_id", "qdrant_filter", "qdrant_search"]
