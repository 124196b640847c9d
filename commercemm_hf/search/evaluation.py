"""Recall of an approximate `ProductIndex` against exact search, chunked over queries (and, inside exact search,
over products), and the synthetic catalog vectors the tests and `bench/bench_search.py` use."""

from __future__ import annotations

import numpy as np
import torch

from ..pipelines.pipeline_commercemm_index import ProductIndex


def top_k_ids(index: ProductIndex, queries, k: int = 10, batch_size: int = 1024, filter: dict | None = None):
    """The ids of each query's top-`k` products, searched `batch_size` queries at a time."""
    hits = []
    for start in range(0, len(queries), batch_size):
        _, rows = index.search(queries[start:start + batch_size], k, filter)
        hits.extend(index.ids_of(query_rows) for query_rows in rows.tolist())
    return hits


def recall_against_exact(index: ProductIndex, exact, queries, k: int = 10, batch_size: int = 1024,
                         filter: dict | None = None) -> float:
    """Mean Recall@k of `index` against exact search: the share of each query's exact top-`k` ids that `index`
    returns in its own top-`k`. `exact` is an exact `ProductIndex` over the same products, or the exact ids from
    `top_k_ids` (computed once, reused for several indexes).

    Example:
        >>> from commercemm_hf.pipelines import ProductIndex
        >>> vectors = clustered_unit_vectors(500, 16)
        >>> exact = ProductIndex(16); exact.add(vectors, [str(i) for i in range(500)])
        >>> recall_against_exact(exact, exact, clustered_unit_vectors(20, 16, offset=500), k=5)
        1.0
    """
    truth = top_k_ids(exact, queries, k, batch_size, filter) if isinstance(exact, ProductIndex) else exact
    found = top_k_ids(index, queries, k, batch_size, filter)
    if len(truth) != len(found):
        raise ValueError(f"{len(truth)} exact results for {len(found)} queries.")
    shares = [len(set(a) & set(e)) / len(e) for a, e in zip(found, truth) if e]
    return float(np.mean(shares)) if shares else 1.0


def clustered_unit_vectors(count: int, dim: int, seed: int = 0, offset: int = 0, num_clusters: int = 1000,
                           latent_dim: int = 16, chunk: int = 65536) -> torch.Tensor:
    """`count` L2-normalised float32 vectors shaped like product embeddings: `num_clusters` category centres, a
    `latent_dim`-dimensional spread within each (real embeddings have a low intrinsic dimension) and a little
    isotropic noise. Rows `offset..offset+count` of one endless sequence for a `seed`: queries drawn with another
    offset come from the same distribution as the products without repeating them."""
    basis_rng = np.random.default_rng(seed)
    centres = basis_rng.standard_normal((num_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = basis_rng.standard_normal((latent_dim, dim)).astype(np.float32) / np.sqrt(latent_dim)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, chunk):
        rows = min(chunk, count - start)
        rng = np.random.default_rng([seed, offset + start])  # the same rows whatever `count` and `chunk`
        cluster = rng.integers(0, num_clusters, rows)
        block = centres[cluster] + 0.6 * rng.standard_normal((rows, latent_dim)).astype(np.float32) @ basis
        block += 0.15 / np.sqrt(dim) * rng.standard_normal((rows, dim)).astype(np.float32)
        out[start:start + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return torch.from_numpy(out)


__all__ = ["clustered_unit_vectors", "recall_against_exact", "top_k_ids"]
