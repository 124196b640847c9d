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

This file travels as Hugging Face remote code: torch, numpy and safetensors (transformers' own dependency); FAISS
is optional and imported only when asked for.

Example:
    >>> import torch
    >>> index = ProductIndex(4, index_type="flat")
    >>> vectors = torch.nn.functional.normalize(torch.eye(4)[:3] + 0.1, dim=-1)
    >>> index.add(vectors, ["a", "b", "c"], metadata=[{"category": "mug"}, {"category": "lamp"}, {"category": "mug"}])
    >>> [hit["product_id"] for hit in index.query(vectors[1:2], top_k=2, filter={"category": "mug"})[0]]
    ['a', 'c']
"""

import json
import math
import os
import shutil
import tempfile

import numpy as np
import torch


INDEX_FORMAT = "commercemm-product-index"
INDEX_VERSION = 2
INDEX_METADATA = "product_index.json"
INDEX_VECTORS = "product_vectors.safetensors"
INDEX_FAISS = "product_index.faiss"
LEGACY_EMBEDDINGS = "product_embeddings.f32"
NAMED_INDEX_TYPES = ("flat", "hnsw", "ivfpq")
_SCORE_ELEMENTS = 1 << 24  # queries x products scores computed at once by exact search (64 MiB of float32)


def import_faiss(reason: str = "this index type"):
    try:
        import faiss
    except ImportError as error:
        raise ImportError(f"{reason} needs FAISS: pip install faiss-cpu (or a GPU build of faiss).") from error
    return faiss


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


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


def _factory_for(index_type: str, dim: int, num_vectors: int) -> str:
    """The FAISS factory string of a named type (sized to `num_vectors` when it is trained), or `index_type`."""
    if index_type == "hnsw":
        return "HNSW32,Flat"
    if index_type == "ivfpq":
        # ~4 sqrt(n) lists with >= 39 training points each (FAISS's own minimum); 4 dimensions per PQ code (a
        # 16th of float32's memory), enough for a Recall@10 that 8 dimensions per code does not reach
        nlist = max(1, min(int(4 * math.sqrt(num_vectors)), num_vectors // 39))
        nlist = 1 << max(0, int(math.log2(nlist)))
        subquantizers = next(m for m in range(max(1, dim // 4), 0, -1) if dim % m == 0)
        bits = max(1, min(8, int(math.log2(max(2, num_vectors // 39)))))
        # "np": no polysemous training, which FAISS's factory otherwise runs for 8-bit codes (minutes, for a
        # Hamming pre-filter this index does not use)
        return f"IVF{nlist},PQ{subquantizers}x{bits}np"
    return index_type


def _search_parameters(faiss, index, selector, keep: list):
    """FAISS search parameters carrying `selector`, of the type each index class expects (nested through
    pre-transforms and refinement), with the index's current nprobe / efSearch."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        inner = _search_parameters(faiss, index.index, selector, keep)
        params = faiss.SearchParametersPreTransform(index_params=inner)
    elif isinstance(index, faiss.IndexRefine):
        inner = _search_parameters(faiss, index.base_index, selector, keep)
        params = faiss.IndexRefineSearchParameters(k_factor=index.k_factor, base_index_params=inner)
        params.sel = selector
    elif isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe, max_codes=index.max_codes)
    elif isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    else:
        params = faiss.SearchParameters(sel=selector)
    keep.append(params)
    return params


class ProductIndex:
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

    def _probe(self, num_vectors: int = 10_000):
        """An empty FAISS index of this type (sized for `num_vectors`), or a ValueError naming the type."""
        faiss = import_faiss()
        factory = _factory_for(self.index_type, self.dim, num_vectors)
        try:
            return faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise ValueError(f"FAISS cannot build index_type {self.index_type!r} ({factory!r}) for dim "
                             f"{self.dim}: {error}") from error

    # ------------------------------------------------------------------------------------------------ updates

    def _checked(self, embeddings, product_ids, metadata) -> tuple[np.ndarray, list[str], list]:
        if isinstance(embeddings, np.ndarray):
            embeddings = torch.from_numpy(embeddings)
        embeddings = embeddings.detach().float().cpu()
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

    # ------------------------------------------------------------------------------------------------ FAISS

    def _faiss_add(self, vectors: np.ndarray):
        if self._faiss_index is None:
            if self._needs_training():
                self._pending.append(vectors)
                self._num_pending += len(vectors)
                if self._num_pending >= self.train_size:
                    self.train()
                return
            self._create_faiss_index(len(vectors))
        (self._device_index or self._faiss_index).add(vectors)

    def _needs_training(self) -> bool:
        return not self._probe().is_trained

    def _create_faiss_index(self, num_vectors: int):
        self._faiss_index = self._probe(num_vectors)
        self.factory = _factory_for(self.index_type, self.dim, num_vectors)
        self._apply_search_parameters()

    def train(self):
        """Train a type that needs it on (a sample of) the products added so far, then index them."""
        if self._faiss_index is not None or not self.is_approximate:
            return
        pending = np.concatenate(self._pending) if self._pending else np.zeros((0, self.dim), np.float32)
        if not len(pending):
            raise ValueError(f"index_type {self.index_type!r} needs training: add products before searching.")
        self._create_faiss_index(min(len(pending), self.train_size))  # sized to the sample it is trained on
        sample = pending
        if len(pending) > self.train_size:
            sample = pending[np.random.default_rng(0).choice(len(pending), self.train_size, replace=False)]
        try:
            self._faiss_index.train(sample)
        except RuntimeError as error:
            self._faiss_index = None
            raise ValueError(f"Training FAISS {self.factory!r} on {len(sample)} products failed (too few for this "
                             f"type? a named type such as 'ivfpq' sizes itself): {error}") from error
        self._to_device()
        (self._device_index or self._faiss_index).add(pending)
        self._pending, self._num_pending = [], 0

    def _to_device(self):
        faiss = import_faiss()
        wanted = self.use_gpu
        if wanted is None:
            wanted = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        if not wanted:
            return
        if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
            if self.use_gpu:
                raise RuntimeError("use_gpu=True but the installed FAISS has no GPU support or sees no GPU.")
            return
        try:
            self._device_index = faiss.index_cpu_to_all_gpus(self._faiss_index)
        except RuntimeError as error:  # e.g. HNSW has no GPU version: stay on the CPU
            if self.use_gpu:
                raise RuntimeError(f"FAISS cannot put {self.factory!r} on the GPU: {error}") from error
            self._device_index = None

    def _cpu_faiss_index(self):
        if self._device_index is not None:
            return import_faiss().index_gpu_to_cpu(self._device_index)
        return self._faiss_index

    def set_search_parameters(self, **params):
        """FAISS search-time parameters by their `faiss.ParameterSpace` names: `nprobe` (IVF lists scanned),
        `efSearch` (HNSW candidate list), `k_factor` (refinement), ...; kept and saved with the index."""
        for name, value in params.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Search parameter {name}={value!r} must be a positive number.")
        if params and not self.is_approximate:
            raise ValueError(f"Search parameters {sorted(params)} need a FAISS index type; a flat index is exact.")
        previous = dict(self.search_params)
        self.search_params.update(params)
        try:
            self._apply_search_parameters()
        except ValueError:
            self.search_params = previous
            raise

    def _apply_search_parameters(self):
        if self._faiss_index is None:
            return
        faiss = import_faiss()
        space = faiss.GpuParameterSpace() if self._device_index is not None else faiss.ParameterSpace()
        for name, value in self.search_params.items():
            try:
                space.set_index_parameter(self._device_index or self._faiss_index, name, value)
            except RuntimeError as error:
                raise ValueError(f"FAISS index {self.factory!r} has no search parameter {name!r}: {error}") from error

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

    def _approximate(self, queries: np.ndarray, top_k: int, allowed: np.ndarray | None):
        faiss = import_faiss()
        self.train()
        index = self._device_index or self._faiss_index
        if allowed is None:
            return index.search(queries, top_k)
        bitmap = np.packbits(allowed, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        keep = [bitmap, selector]
        try:
            return index.search(queries, top_k, params=_search_parameters(faiss, index, selector, keep))
        except RuntimeError:  # a FAISS type (or GPU index) without selector support: all queries go exact
            return (np.full((len(queries), top_k), -np.inf, dtype=np.float32),
                    np.full((len(queries), top_k), -1, dtype=np.int64))

    def search(self, queries: torch.Tensor, top_k: int,
               filter: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and rows `(num_queries, k)` of the best live products (matching `filter`) for each query, best
        first, with `k = min(top_k, number of matching products)`; `ids_of(rows)` names them."""
        if not len(self):
            raise ValueError("The product index is empty: call index_products(...) or load_index(...) first.")
        if isinstance(queries, np.ndarray):
            queries = torch.from_numpy(queries)
        queries = queries.detach().float().cpu()
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

    # ------------------------------------------------------------------------------------------------ files

    def save(self, folder: str, overwrite: bool = False):
        """Write the index into `folder` atomically (a temporary sibling folder renamed into place). An existing
        non-empty `folder` is replaced only with `overwrite=True`."""
        from safetensors.numpy import save_file

        folder = os.path.abspath(os.fspath(folder))
        if os.path.exists(folder) and not (os.path.isdir(folder) and not os.listdir(folder)) and not overwrite:
            raise FileExistsError(f"{folder} already exists: pass overwrite=True to replace it.")
        if self.is_approximate and len(self):
            self.train()
        parent = os.path.dirname(folder)
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.saving-", dir=parent)
        try:
            tensors = {"live": self._live.view.astype(np.uint8)}
            if self._vectors is not None:
                tensors["vectors"] = self._vectors.view
            fields = {}
            for number, (field, column) in enumerate(self._metadata.items()):
                column["rows"].pad_to(self.num_rows)
                tensors[f"metadata.{number}"] = column["rows"].view
                fields[field] = {"tensor": f"metadata.{number}", "values": column["values"]}
            save_file(tensors, os.path.join(staging, INDEX_VECTORS), metadata={"format": INDEX_FORMAT})
            faiss_file = None
            if self._faiss_index is not None:
                faiss_file = INDEX_FAISS
                import_faiss().write_index(self._cpu_faiss_index(), os.path.join(staging, INDEX_FAISS))
            meta = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "dim": self.dim,
                    "product_kind": self.product_kind, "index_type": self.index_type,
                    "factory": getattr(self, "factory", None),
                    "num_rows": self.num_rows, "count": len(self), "keep_vectors": self.keep_vectors,
                    "train_size": self.train_size, "search_params": self.search_params, "faiss_file": faiss_file,
                    "metadata_fields": fields, "product_ids": self._row_ids}
            with open(os.path.join(staging, INDEX_METADATA), "w", encoding="utf-8") as handle:
                json.dump(meta, handle)
            _replace_folder(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @classmethod
    def load(cls, folder: str, backend: str = "auto", use_gpu: bool | None = None) -> "ProductIndex":
        """Read an index written by `save` (or the first `.f32` format), refusing mismatched shapes and versions."""
        folder = os.fspath(folder)
        path = os.path.join(folder, INDEX_METADATA)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder} holds no product index ({INDEX_METADATA} is missing).")
        try:
            with open(path, encoding="utf-8") as handle:
                meta = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"The index in {folder} is corrupt: {path} is not JSON ({error}).") from error
        if not isinstance(meta, dict):
            raise ValueError(f"The index in {folder} is corrupt: {path} holds a {type(meta).__name__}, not an object.")
        if "version" not in meta and os.path.isfile(os.path.join(folder, LEGACY_EMBEDDINGS)):
            return cls._load_legacy(folder, meta, backend)
        if meta.get("format") != INDEX_FORMAT or meta.get("version") != INDEX_VERSION:
            raise ValueError(f"{path} is format {meta.get('format')!r} version {meta.get('version')!r}; this code "
                             f"reads {INDEX_FORMAT!r} version {INDEX_VERSION} (and the first .f32 format).")
        return cls._load_current(folder, meta, backend, use_gpu)

    @classmethod
    def _load_current(cls, folder, meta, backend, use_gpu) -> "ProductIndex":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        def corrupt(what):
            return ValueError(f"The index in {folder} is corrupt: {what}.")

        try:
            dim, num_rows, ids = int(meta["dim"]), int(meta["num_rows"]), meta["product_ids"]
            fields = meta["metadata_fields"]
        except (KeyError, TypeError, ValueError) as error:
            raise corrupt(f"{INDEX_METADATA} lacks or mistypes {error}") from error
        if not isinstance(ids, list) or len(ids) != num_rows:
            raise corrupt(f"{INDEX_METADATA} lists {len(ids) if isinstance(ids, list) else 'no'} product ids for "
                          f"{num_rows} rows")
        try:
            tensors = load_file(os.path.join(folder, INDEX_VECTORS))
        except (SafetensorError, OSError, ValueError) as error:
            raise corrupt(f"{INDEX_VECTORS} cannot be read ({error})") from error
        live = tensors.get("live")
        if live is None or live.shape != (num_rows,):
            raise corrupt(f"{INDEX_VECTORS} 'live' has shape {None if live is None else live.shape}, expected "
                          f"({num_rows},)")
        index = cls(dim, meta.get("product_kind", "multimodal"), backend, meta.get("index_type", "flat"),
                    keep_vectors=bool(meta.get("keep_vectors", True)), train_size=int(meta.get("train_size", 100_000)),
                    use_gpu=use_gpu)
        if index.keep_vectors:
            vectors = tensors.get("vectors")
            if vectors is None or vectors.shape != (num_rows, dim) or vectors.dtype != np.float32:
                found = None if vectors is None else (vectors.shape, str(vectors.dtype))
                raise corrupt(f"{INDEX_VECTORS} 'vectors' is {found}, "
                              f"expected float32 of shape ({num_rows}, {dim})")
            if not np.isfinite(vectors).all():
                raise corrupt(f"{INDEX_VECTORS} holds NaN or infinite vectors")
            index._vectors = _Growable.of(vectors)
        live = live.astype(bool)
        rows = np.flatnonzero(live)
        live_ids = [ids[row] for row in rows]
        if any(not isinstance(product_id, str) for product_id in live_ids) or len(set(live_ids)) != len(live_ids):
            raise corrupt(f"{INDEX_METADATA} has missing, non-string or repeated ids among live rows")
        index._row_ids = [product_id if alive else None for product_id, alive in zip(ids, live.tolist())]
        index._rows = dict(zip(live_ids, rows.tolist()))
        index._live = _Growable.of(live, fill=False)
        for field, spec in fields.items():
            codes = tensors.get(spec.get("tensor"))
            values = spec.get("values")
            if codes is None or codes.shape != (num_rows,) or not isinstance(values, list) or \
                    (len(codes) and int(codes.max(initial=-1)) >= len(values)):
                raise corrupt(f"metadata field {field!r} does not match its {num_rows} rows / values")
            index._metadata[field] = {"values": values, "codes": {v: i for i, v in enumerate(values)},
                                      "rows": _Growable.of(codes.astype(np.int32), fill=-1)}
        if meta.get("faiss_file"):
            faiss = import_faiss(f"Loading the {meta.get('index_type')!r} index in {folder}")
            try:
                structure = faiss.read_index(os.path.join(folder, meta["faiss_file"]))
            except RuntimeError as error:
                raise corrupt(f"{meta['faiss_file']} cannot be read by FAISS ({error})") from error
            if structure.d != dim or structure.ntotal != num_rows:
                raise corrupt(f"{meta['faiss_file']} holds {structure.ntotal} vectors of dim {structure.d}, "
                              f"expected {num_rows} of dim {dim}")
            index._faiss_index, index.factory = structure, meta.get("factory")
            index._to_device()
        elif index.is_approximate and num_rows:
            raise corrupt(f"{INDEX_FAISS} is missing for index type {meta.get('index_type')!r}")
        index.search_params = dict(meta.get("search_params") or {})
        index._apply_search_parameters()
        return index

    @classmethod
    def _load_legacy(cls, folder, meta, backend) -> "ProductIndex":
        try:
            dim, count, ids = int(meta["dim"]), int(meta["count"]), meta["product_ids"]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"The index in {folder} is corrupt: {INDEX_METADATA} lacks {error}.") from error
        with open(os.path.join(folder, LEGACY_EMBEDDINGS), "rb") as handle:
            data = handle.read()
        expected = count * dim * 4
        if len(data) != expected or not isinstance(ids, list) or len(ids) != count:
            raise ValueError(f"The index in {folder} is corrupt: {len(data)} bytes of embeddings, expected {expected}.")
        index = cls(dim, meta.get("product_kind", "multimodal"), backend)
        index.add(np.frombuffer(data, dtype="<f4").reshape(count, dim).astype(np.float32), ids)
        return index


def _replace_folder(staging: str, folder: str):
    """Move the finished `staging` folder to `folder`; an old `folder` is renamed aside first and removed last, so
    at every moment one complete index sits at `folder` or at the aside name."""
    aside = None
    if os.path.exists(folder):
        aside = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.old-", dir=os.path.dirname(folder))
        os.rmdir(aside)
        os.rename(folder, aside)
    try:
        os.rename(staging, folder)
    except BaseException:
        if aside is not None:
            os.rename(aside, folder)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


__all__ = ["ProductIndex", "metadata_value", "NAMED_INDEX_TYPES", "INDEX_VERSION"]
