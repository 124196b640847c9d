"""FAISS for `ProductIndex`: building, training, moving to the GPUs and searching a FAISS index type, and the
search-time parameters (`nprobe`, `efSearch`, ...). `FaissIndexMixin` holds the methods; `ProductIndex`
(pipeline_commercemm_index.py) holds the state they read (`_faiss_index`, `_device_index`, `_pending`, ...).

This file travels as Hugging Face remote code: numpy and the standard library; FAISS is optional and imported only
when asked for.
"""

import math

import numpy as np


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


class FaissIndexMixin:
    """The FAISS side of `ProductIndex` (a non-flat `index_type`, or `backend="faiss"`).

    Example:
        >>> import torch
        >>> from commercemm_hf.pipelines.pipeline_commercemm_index import ProductIndex
        >>> index = ProductIndex(8, index_type="ivfpq", train_size=200)
        >>> index.add(torch.nn.functional.normalize(torch.randn(300, 8), dim=1), [f"p{i}" for i in range(300)])
        >>> index.factory, index.is_approximate  # trained on a sample of 200 (4 lists of >= 39 products)
        ('IVF4,PQ2x2np', True)
        >>> index.set_search_parameters(nprobe=8)
        >>> index.search_params
        {'nprobe': 8}
    """

    def _probe(self, num_vectors: int = 10_000):
        """An empty FAISS index of this type (sized for `num_vectors`), or a ValueError naming the type."""
        faiss = import_faiss()
        factory = _factory_for(self.index_type, self.dim, num_vectors)
        try:
            return faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise ValueError(f"FAISS cannot build index_type {self.index_type!r} ({factory!r}) for dim "
                             f"{self.dim}: {error}") from error

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


__all__ = ["FaissIndexMixin", "faiss_available", "import_faiss"]
