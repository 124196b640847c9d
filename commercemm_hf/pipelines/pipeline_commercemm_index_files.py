"""Files of `ProductIndex`: `save` writes `product_index.json` (format version, ids, metadata values, parameters),
`product_vectors.safetensors` (vectors, live rows, metadata codes) and `product_index.faiss` (FAISS's own format)
into a temporary folder renamed into place; `load` reads them back, refusing mismatched shapes, versions and corrupt
files with the file and the field named, and still reads the first format (`product_embeddings.f32` + JSON).
`IndexFilesMixin` holds the methods; `ProductIndex` (pipeline_commercemm_index.py) builds the index they restore.

This file travels as Hugging Face remote code: numpy, safetensors (transformers' own dependency), the standard library
and single-dot siblings; FAISS is optional and imported only when asked for.
"""

import json
import os
import shutil
import tempfile
from typing import Self

import numpy as np

from .pipeline_commercemm_index_faiss import import_faiss


INDEX_FORMAT = "commercemm-product-index"
INDEX_VERSION = 2
INDEX_METADATA = "product_index.json"
INDEX_VECTORS = "product_vectors.safetensors"
INDEX_FAISS = "product_index.faiss"
LEGACY_EMBEDDINGS = "product_embeddings.f32"


class IndexFilesMixin:
    """`save` / `load` of `ProductIndex`.

    Example:
        >>> import os, tempfile, torch
        >>> from commercemm_hf.pipelines.pipeline_commercemm_index import ProductIndex
        >>> index = ProductIndex(4)
        >>> index.add(torch.eye(4)[:2], ["a", "b"], metadata=[{"brand": "acme"}, None])
        >>> folder = os.path.join(tempfile.mkdtemp(), "index")
        >>> index.save(folder)
        >>> sorted(os.listdir(folder))
        ['product_index.json', 'product_vectors.safetensors']
        >>> loaded = ProductIndex.load(folder)
        >>> loaded.product_ids, loaded.metadata_of("a"), loaded.metadata_of("b")
        (['a', 'b'], {'brand': 'acme'}, {})
    """

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
    def load(cls, folder: str, backend: str = "auto", use_gpu: bool | None = None) -> Self:
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
    def _load_current(cls, folder, meta, backend, use_gpu) -> Self:
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
        else:
            vectors = None
        live = live.astype(bool)
        live_ids = [ids[row] for row in np.flatnonzero(live)]
        if any(not isinstance(product_id, str) for product_id in live_ids) or len(set(live_ids)) != len(live_ids):
            raise corrupt(f"{INDEX_METADATA} has missing, non-string or repeated ids among live rows")
        metadata = {}
        for field, spec in fields.items():
            codes = tensors.get(spec.get("tensor"))
            values = spec.get("values")
            if codes is None or codes.shape != (num_rows,) or not isinstance(values, list) or \
                    (len(codes) and int(codes.max(initial=-1)) >= len(values)):
                raise corrupt(f"metadata field {field!r} does not match its {num_rows} rows / values")
            metadata[field] = (values, codes)
        index._restore([product_id if alive else None for product_id, alive in zip(ids, live.tolist())], live,
                       vectors, metadata)
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
    def _load_legacy(cls, folder, meta, backend) -> Self:
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


__all__ = ["INDEX_FAISS", "INDEX_FORMAT", "INDEX_METADATA", "INDEX_VECTORS", "INDEX_VERSION", "IndexFilesMixin",
           "LEGACY_EMBEDDINGS"]
