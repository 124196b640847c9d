"""`ProductIndex`: product embeddings, their ids and string metadata, searched exactly or with a FAISS index.

- **Index types**: `"flat"` (exact, the default: a chunked matrix product in torch, or FAISS's brute-force kNN),
  `"hnsw"` (FAISS `HNSW32,Flat`), `"ivfpq"` (FAISS `IVF{nlist},PQ{dim/4}`, sized to the catalog when it is
  trained), or any FAISS factory string (`"IVF4096,PQ32"`, `"OPQ32,IVF1024,PQ32"`, `"HNSW16,SQ8"`, ...). Types that
  need training are trained on a sample of the first `train_size` products (or on what is there at the first
  search / save). Scores are inner products of L2-normalised vectors (cosine). A GPU FAISS build is used when one is
  installed and sees a GPU (`use_gpu`).
- **Updates**: `add` (refuses ids already present), `upsert` (re-adding an id replaces it), `delete`; all O(batch)
  through an id -> row map. Deleted or replaced rows stay in the FAISS structure but are never returned.
- **Filters**: `filter={"category": "mugs", "brand": ["acme", "zeta"]}` (equality on a string, membership in a
  list/set; all fields must match). Top-k is honoured after filtering: when an approximate index cannot find `k`
  allowed products, those queries are answered exactly over the allowed ones.
- **Files** (`save` / `load`): `product_index.json` (format version, ids, metadata values, parameters),
  `product_vectors.safetensors` (vectors, live rows, metadata codes) and `product_index.faiss` (FAISS's own format,
  `faiss.write_index`). Nothing is pickled; saving writes a temporary folder and renames it into place, and never
  replaces an existing index without `overwrite=True`. The first format (`product_embeddings.f32` + JSON) still loads.

By job: this file holds the rows (ids, live mask, vectors, metadata codes), updates, filters and exact search;
`pipeline_commercemm_index_faiss.py` the FAISS index types (`FaissIndexMixin`), and
`pipeline_commercemm_index_files.py` `save` / `load` (`IndexFilesMixin`). Every name stays importable from here.

This file travels as Hugging Face remote code: torch, numpy and single-dot siblings (which add safetensors,
transformers' own dependency); FAISS is optional and imported only when asked for.

Example:
    >>> import torch
    >>> index = ProductIndex(4, index_type="flat")
    >>> vectors = torch.nn.functional.normalize(torch.eye(4)[:3] + 0.1, dim=-1)
    >>> index.add(vectors, ["a", "b", "c"], metadata=[{"category": "mug"}, {"category": "lamp"}, {"category": "mug"}])
    >>> [hit["product_id"] for hit in index.query(vectors[1:2], top_k=2, filter={"category": "mug"})[0]]
    ['a', 'c']
"""

import numpy as np
import torch

from .pipeline_commercemm_index_faiss import FaissIndexMixin, faiss_available, import_faiss
from .pipeline_commercemm_index_files import (
    INDEX_FAISS,
    INDEX_FORMAT,
    INDEX_METADATA,
    INDEX_VECTORS,
    INDEX_VERSION,
    LEGACY_EMBEDDINGS,
    IndexFilesMixin,
)


NAMED_INDEX_TYPES = ("flat", "hnsw", "ivfpq")
_SCORE_ELEMENTS = 1 << 24  # queries x products scores computed at once by exact search (64 MiB of float32)


def metadata_value(value, field: str, where: str) -> str | None:
    """A metadata value as stored and matched: strings as they are, booleans as "true"/"false", integers in
    decimal, None as missing; anything else is refused rather than silently stringified."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    raise ValueError(f"Metadata field {field!r} of {where} is a {type(value).__name__} ({value!r}); metadata "
                     "values must be strings (booleans and integers are converted), so convert it first.")


class _Growable:
    """A numpy array that grows at its end in amortised O(1) per row (capacity doubles)."""

    def __init__(self, row_shape: tuple = (), dtype=np.float32, fill=0):
        self._data = np.full((0, *row_shape), fill, dtype=dtype)
        self._size, self._fill = 0, fill

    def __len__(self) -> int:
        return self._size

    @property
    def view(self) -> np.ndarray:
        return self._data[:self._size]

    def extend(self, rows: np.ndarray):
        needed = self._size + len(rows)
        if needed > len(self._data):
            # np.empty: the spare capacity is not touched, so it costs address space, not resident memory
            grown = np.empty((max(needed, 2 * len(self._data), 1024), *self._data.shape[1:]), dtype=self._data.dtype)
            grown[:self._size] = self._data[:self._size]
            self._data = grown
        self._data[self._size:needed] = rows
        self._size = needed

    def pad_to(self, size: int):
        if size > self._size:
            self.extend(np.full((size - self._size, *self._data.shape[1:]), self._fill, dtype=self._data.dtype))

    @classmethod
    def of(cls, array: np.ndarray, fill=0) -> "_Growable":
        grown = cls(array.shape[1:], array.dtype, fill)
        grown._data, grown._size = np.ascontiguousarray(array), len(array)
        return grown


def _float_rows(values, what: str) -> torch.Tensor:
    """`values` (a tensor, a numpy array or nested lists of numbers) as a float32 CPU tensor; a TypeError naming
    `what` for anything else, instead of an AttributeError from inside."""
    if isinstance(values, np.ndarray):
        values = torch.from_numpy(values)
    elif isinstance(values, (list, tuple)):
        try:
            values = torch.as_tensor(values, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"{what} must be a (n, dim) tensor, numpy array or list of equal-length lists of "
                            f"numbers: {error}") from None
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{what} must be a (n, dim) tensor, numpy array or list of lists, got {type(values).__name__}.")
    return values.detach().float().cpu()


class ProductIndex(FaissIndexMixin, IndexFilesMixin):
    """Product embeddings `(n, dim)` with ids and string metadata; exact or FAISS search (see the module docstring).

    Args:
        dim: the embedding size.
        product_kind: which embedding the products are indexed by ("multimodal", "image" or "text"); stored.
        backend: exact search in "torch", "faiss" (FAISS's kNN), or "auto" (FAISS when installed). FAISS index types
            always use FAISS.
        index_type: "flat", "hnsw", "ivfpq" or a FAISS factory string.
        keep_vectors: keep the float32 vectors besides a FAISS type's own structure (saved in the safetensors
            file). Default: only for "flat", which is its vectors; a FAISS type's exact fallback for narrow filters
            reads FAISS's reconstructions (exact for HNSW/IVF over flat storage, decoded codes for PQ/SQ).
        train_size: how many products a type that needs training waits for (and samples) before training.
        use_gpu: put the FAISS structure on the GPUs (default: when the installed FAISS sees one).
        search_params: FAISS search parameters such as `nprobe=32` or `efSearch=128` (see `set_search_parameters`).

    Example:
        >>> import os, tempfile, torch
        >>> from commercemm_hf.pipelines.pipeline_commercemm_index import ProductIndex
        >>> vectors = torch.nn.functional.normalize(torch.randn(20, 16), dim=1)
        >>> ids = [f"p{i}" for i in range(20)]
        >>> index = ProductIndex(16, index_type="hnsw", efSearch=128)
        >>> index.add(vectors, ids, metadata=[{"category": "mug" if i % 2 else "lamp"} for i in range(20)])
        >>> index.upsert(-vectors[:10], ids[:10])  # replaces p0 ... p9 (and their metadata)
        >>> len(index), index.metadata_of("p11"), index.metadata_of("p1")
        (20, {'category': 'mug'}, {})
        >>> hits = index.query(vectors[10:12], top_k=3, filter={"category": ["mug", "cup"]})
        >>> [len(row) for row in hits], {index.metadata_of(hit["product_id"])["category"] for row in hits
        ...                              for hit in row}
        ([3, 3], {'mug'})
        >>> index.query(vectors[11:12], top_k=1)[0][0]["product_id"]
        'p11'
        >>> folder = os.path.join(tempfile.mkdtemp(), "catalog_index")
        >>> index.save(folder)
        >>> len(ProductIndex.load(folder))
        20
    """

    def __init__(self, dim: int, product_kind: str = "multimodal", backend: str = "auto", index_type: str = "flat",
                 keep_vectors: bool | None = None, train_size: int = 100_000, use_gpu: bool | None = None,
                 **search_params):
        if backend not in ("auto", "torch", "faiss"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'faiss', got {backend!r}.")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}.")
        if not isinstance(index_type, str) or not index_type:
            raise ValueError("index_type must be 'flat', 'hnsw', 'ivfpq' or a FAISS factory string, "
                             f"got {index_type!r}.")
        if product_kind not in ("multimodal", "image", "text"):
            raise ValueError(f"product_kind must be 'multimodal', 'image' or 'text', got {product_kind!r}.")
        self.dim, self.product_kind, self.backend = dim, product_kind, backend
        self.index_type, self.train_size, self.use_gpu = index_type, int(train_size), use_gpu
        self.search_params: dict = {}
        self._row_ids: list = []  # product id of each row; None for a deleted / replaced row
        self._rows: dict[str, int] = {}  # product id -> its live row
        self._live = _Growable((), np.bool_, False)
        self._metadata: dict[str, dict] = {}  # field -> {"values": [...], "codes": {value: code}, "rows": _Growable}
        self._faiss_index = None  # the FAISS structure of a non-flat type, once it exists
        self._device_index = None  # the same on the GPUs
        self._pending: list[np.ndarray] = []  # vectors waiting for an untrained FAISS type to be trained
        self._num_pending = 0
        if backend == "faiss" or self.is_approximate:
            import_faiss(f"index_type={index_type!r}" if self.is_approximate else "backend='faiss'")
        if self.is_approximate:
            self._probe()  # an unknown factory string fails here, not at the first add
        if keep_vectors is None:  # FAISS types hold the vectors (or their codes) themselves: no second copy
            keep_vectors = not self.is_approximate
        if not keep_vectors and not self.is_approximate:
            raise ValueError("A flat (exact) index is its vectors: keep_vectors=False needs a FAISS index type.")
        self.keep_vectors = bool(keep_vectors)
        self._vectors = _Growable((dim,), np.float32) if self.keep_vectors else None
        if search_params:
            self.set_search_parameters(**search_params)

    # ------------------------------------------------------------------------------------------------ properties

    @property
    def is_approximate(self) -> bool:
        return self.index_type.lower() != "flat"

    @property
    def num_rows(self) -> int:
        """Rows ever added, including deleted and replaced ones (what the FAISS structure holds)."""
        return len(self._row_ids)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, product_id) -> bool:
        return str(product_id) in self._rows

    @property
    def product_ids(self) -> list[str]:
        """The live product ids, in the order they were added."""
        return [product_id for product_id in self._row_ids if product_id is not None]

    @property
    def embeddings(self) -> torch.Tensor:
        """The live products' vectors `(len(self), dim)` (the kept vectors, or FAISS's reconstructions)."""
        rows = np.flatnonzero(self._live.view)
        return torch.from_numpy(self._vectors_of(rows))

    def metadata_of(self, product_id) -> dict:
        row = self._rows.get(str(product_id))
        if row is None:
            raise KeyError(f"Product {product_id!r} is not in the index.")
        out = {}
        for field, column in self._metadata.items():
            code = int(column["rows"].view[row]) if row < len(column["rows"]) else -1
            if code >= 0:
                out[field] = column["values"][code]
        return out

    # ------------------------------------------------------------------------------------------------ updates

    def _checked(self, embeddings, product_ids, metadata) -> tuple[np.ndarray, list[str], list]:
        embeddings = _float_rows(embeddings, "embeddings")
        if isinstance(product_ids, (str, bytes)):  # list("abc") would be three ids
            raise TypeError(f"product_ids must be a list of ids, got a single {type(product_ids).__name__} "
                            f"{product_ids!r}.")
        product_ids = list(product_ids)
        if embeddings.dim() != 2 or embeddings.shape[1] != self.dim or len(product_ids) != embeddings.shape[0]:
            raise ValueError(f"Expected ({len(product_ids)}, {self.dim}) embeddings, got {tuple(embeddings.shape)}.")
        ids = []
        for position, product_id in enumerate(product_ids):
            if product_id is None or (isinstance(product_id, str) and not product_id.strip()):
                raise ValueError(f"Product {position} of this batch has no id ({product_id!r}).")
            ids.append(str(product_id))
        vectors = np.ascontiguousarray(embeddings.numpy())
        finite = np.isfinite(vectors).all(axis=1)  # numpy's isfinite: ~20x torch's on CPU here
        if not finite.all():
            bad = [ids[i] for i in np.flatnonzero(~finite)[:10].tolist()]
            raise ValueError(f"Embeddings of products {bad} are NaN or infinite (a product lacking the modalities of "
                             f"a {self.product_kind} index gives NaN); no product was added.")
        if metadata is not None:
            metadata = list(metadata)
            if len(metadata) != len(ids):
                raise ValueError(f"{len(ids)} products but {len(metadata)} metadata entries.")
            for product_id, entry in zip(ids, metadata):
                if entry is not None and not isinstance(entry, dict):
                    raise ValueError(f"Metadata of product {product_id!r} must be a dict, got {type(entry).__name__}.")
                for field, value in (entry or {}).items():
                    metadata_value(value, field, f"product {product_id!r}")
        seen, repeated = set(), []
        for product_id in ids:
            if product_id in seen:
                repeated.append(product_id)
            seen.add(product_id)
        if repeated:
            raise ValueError(f"Product ids repeated within one batch: {repeated[:10]}.")
        return vectors, ids, metadata

    def add(self, embeddings: torch.Tensor, product_ids: list, metadata: list[dict] | None = None):
        """Add new products; refuses ids already in the index (use `upsert` to replace them)."""
        vectors, ids, metadata = self._checked(embeddings, product_ids, metadata)
        present = [product_id for product_id in ids if product_id in self._rows]
        if present:
            raise ValueError(f"Product ids already in the index or repeated: {present[:10]} (upsert replaces them).")
        self._append(vectors, ids, metadata)

    def upsert(self, embeddings: torch.Tensor, product_ids: list, metadata: list[dict] | None = None):
        """Add products, replacing the vector and metadata of ids already in the index."""
        vectors, ids, metadata = self._checked(embeddings, product_ids, metadata)
        self._drop([product_id for product_id in ids if product_id in self._rows])
        self._append(vectors, ids, metadata)

    def delete(self, product_ids: list, missing: str = "raise") -> int:
        """Delete products by id; returns how many were deleted. `missing="ignore"` skips unknown ids."""
        ids = [str(product_id) for product_id in product_ids]
        unknown = [product_id for product_id in ids if product_id not in self._rows]
        if unknown and missing != "ignore":
            raise KeyError(f"Product ids not in the index: {unknown[:10]} (missing='ignore' skips them).")
        return self._drop(list(dict.fromkeys(product_id for product_id in ids if product_id in self._rows)))

    def _drop(self, ids: list[str]) -> int:
        for product_id in ids:
            row = self._rows.pop(product_id)
            self._row_ids[row] = None
            self._live.view[row] = False
        return len(ids)

    def _append(self, vectors: np.ndarray, ids: list[str], metadata: list | None):
        start = self.num_rows
        self._row_ids.extend(ids)
        self._rows.update(zip(ids, range(start, start + len(ids))))
        self._live.extend(np.ones(len(ids), dtype=np.bool_))
        if self._vectors is not None:
            self._vectors.extend(vectors)
        for field, column in self._metadata.items():
            column["rows"].pad_to(start)
        if metadata is not None:
            fields = {field for entry in metadata for field in (entry or {})}
            for field in fields:
                column = self._metadata.setdefault(field, {"values": [], "codes": {},
                                                           "rows": _Growable((), np.int32, -1)})
                column["rows"].pad_to(start)
                codes = np.empty(len(ids), dtype=np.int32)
                for position, entry in enumerate(metadata):
                    value = metadata_value((entry or {}).get(field), field, f"product {ids[position]!r}")
                    if value is None:
                        codes[position] = -1
                        continue
                    code = column["codes"].get(value)
                    if code is None:
                        code = column["codes"][value] = len(column["values"])
                        column["values"].append(value)
                    codes[position] = code
                column["rows"].extend(codes)
        if self.is_approximate:
            self._faiss_add(vectors)

    def _restore(self, row_ids: list, live: np.ndarray, vectors: np.ndarray | None, metadata: dict):
        """Take the rows `load` read and checked: each row's id (None for a deleted / replaced row), the live mask,
        the kept vectors (or None), and per metadata field its values and each row's code (-1: none)."""
        if vectors is not None:
            self._vectors = _Growable.of(vectors)
        self._row_ids = row_ids
        self._rows = {product_id: row for row, product_id in enumerate(row_ids) if product_id is not None}
        self._live = _Growable.of(live, fill=False)
        self._metadata = {field: {"values": values, "codes": {value: code for code, value in enumerate(values)},
                                  "rows": _Growable.of(codes.astype(np.int32), fill=-1)}
                          for field, (values, codes) in metadata.items()}

    # ------------------------------------------------------------------------------------------------ search

    def _allowed(self, filter: dict | None) -> np.ndarray | None:
        """Boolean mask of the rows a search may return (live and matching `filter`), or None for all rows."""
        mask = None if len(self) == self.num_rows else self._live.view.copy()
        for field, wanted in (filter or {}).items():
            if field not in self._metadata:
                raise ValueError(f"Filter field {field!r} is not in the index's metadata (fields: "
                                 f"{sorted(self._metadata)}).")
            column = self._metadata[field]
            values = [wanted] if not isinstance(wanted, (list, tuple, set, frozenset)) else list(wanted)
            codes = [column["codes"].get(metadata_value(value, field, "the filter")) for value in values]
            codes = np.array([code for code in codes if code is not None], dtype=np.int32)
            column["rows"].pad_to(self.num_rows)
            matches = np.isin(column["rows"].view, codes)
            mask = matches if mask is None else mask & matches
        return mask

    def _vectors_of(self, rows: np.ndarray) -> np.ndarray:
        if self._vectors is not None:
            return self._vectors.view[rows]
        self.train()
        index = self._cpu_faiss_index()
        try:
            return index.reconstruct_batch(rows.astype(np.int64))
        except RuntimeError:  # IVF types reconstruct through a direct map, built on first use
            import_faiss().extract_index_ivf(index).make_direct_map()
            return index.reconstruct_batch(rows.astype(np.int64))

    def _exact(self, queries: np.ndarray, top_k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among the allowed rows, chunked over products (never a dense queries x catalog matrix)."""
        if allowed is not None and allowed.sum() < self.num_rows // 2:
            rows = np.flatnonzero(allowed)  # a narrow filter: score only the allowed rows
            scores, positions = self._exact_over(queries, self._vectors_of(rows), top_k)
            return scores, rows[positions]
        if self._vectors is None:
            rows = np.arange(self.num_rows)
            scores, positions = self._exact_over(queries, self._vectors_of(rows), top_k, allowed)
            return scores, positions
        # FAISS's brute-force kNN reads the kept vectors in place (no copy); "auto" takes it for a few queries,
        # where its SIMD scan beats a matrix product, and torch's matrix product for batches (measured 3x faster
        # than FAISS's BLAS path at 64 queries x 200k products, 1 thread)
        use_faiss = self.backend == "faiss" or (self.backend == "auto" and len(queries) < 16 and faiss_available())
        if use_faiss and allowed is None:
            faiss = import_faiss()
            return faiss.knn(queries, self._vectors.view, top_k, metric=faiss.METRIC_INNER_PRODUCT)
        return self._exact_over(queries, self._vectors.view, top_k, allowed)

    @staticmethod
    def _exact_over(queries: np.ndarray, vectors: np.ndarray, top_k: int, allowed: np.ndarray | None = None):
        query_tensor = torch.from_numpy(queries)
        chunk = max(top_k, _SCORE_ELEMENTS // max(1, len(queries)))
        best_scores = torch.full((len(queries), 0), float("-inf"))
        best_rows = torch.zeros((len(queries), 0), dtype=torch.long)
        for start in range(0, len(vectors), chunk):
            block = torch.from_numpy(vectors[start:start + chunk])
            scores = query_tensor @ block.t()
            if allowed is not None:
                scores[:, ~torch.from_numpy(allowed[start:start + chunk])] = float("-inf")
            scores, rows = scores.topk(min(top_k, scores.shape[1]), dim=1)
            best_scores, order = torch.cat([best_scores, scores], 1).topk(
                min(top_k, best_scores.shape[1] + scores.shape[1]), dim=1)
            best_rows = torch.cat([best_rows, rows + start], 1).gather(1, order)
        return best_scores.numpy(), best_rows.numpy()

    def search(self, queries: torch.Tensor, top_k: int,
               filter: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and rows `(num_queries, k)` of the best live products (matching `filter`) for each query, best
        first, with `k = min(top_k, number of matching products)`; `ids_of(rows)` names them."""
        if not len(self):
            raise ValueError("The product index is empty: call index_products(...) or load_index(...) first.")
        queries = _float_rows(queries, "queries")
        if queries.dim() == 1:
            queries = queries[None]
        if queries.dim() != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"Expected queries of shape (n, {self.dim}), got {tuple(queries.shape)}.")
        queries = np.ascontiguousarray(queries.numpy())
        finite = np.isfinite(queries).all(axis=1)
        if not finite.all():
            raise ValueError(f"Queries {np.flatnonzero(~finite)[:10].tolist()} are NaN or infinite (a query "
                             "lacking the modality it is embedded by gives NaN).")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        allowed = self._allowed(filter)
        available = len(self) if allowed is None else int(allowed.sum())
        top_k = min(top_k, available)
        if top_k == 0:
            return torch.zeros(len(queries), 0), torch.zeros(len(queries), 0, dtype=torch.long)
        if not self.is_approximate:
            scores, rows = self._exact(queries, top_k, allowed)
        else:
            scores, rows = self._approximate(queries, top_k, allowed)
            # FAISS marks missing results with -1: answer those queries exactly over the allowed rows instead
            short = np.flatnonzero((rows < 0).any(axis=1))
            if len(short):
                scores, rows = np.array(scores), np.array(rows)
                scores[short], rows[short] = self._exact(queries[short], top_k, allowed)
        return torch.from_numpy(np.asarray(scores, dtype=np.float32)), torch.from_numpy(np.asarray(rows)).long()

    def ids_of(self, rows) -> list:
        return [self._row_ids[int(row)] for row in rows]

    def query(self, queries: torch.Tensor, top_k: int, filter: dict | None = None) -> list[list[dict]]:
        """`[{"product_id", "score"}, ...]` per query, best first (see `search`)."""
        scores, rows = self.search(queries, top_k, filter)
        return [[{"product_id": self._row_ids[int(row)], "score": float(score)} for score, row in zip(s, r)]
                for s, r in zip(scores.tolist(), rows.tolist())]


__all__ = ["INDEX_FAISS", "INDEX_FORMAT", "INDEX_METADATA", "INDEX_VECTORS", "INDEX_VERSION", "LEGACY_EMBEDDINGS",
           "NAMED_INDEX_TYPES", "ProductIndex", "faiss_available", "import_faiss", "metadata_value"]
