"""`product-search`: index a catalog once, then query it by text, image or both.

The index (`ProductIndex`, in `pipeline_commercemm_index.py`) holds one L2-normalised embedding per product (by
default the multimodal one), its id and optional string metadata. Search is exact by default (torch, or FAISS's
brute-force kNN when installed); `index_type="hnsw"`, `"ivfpq"` or a FAISS factory string gives an approximate
index for large catalogs. The index saves (safetensors + JSON + FAISS's own format; nothing is pickled), loads,
grows with `add(...)` without re-embedding what it holds, and builds from the shards `commercemm embed` writes.

This file travels as Hugging Face remote code: transformers, torch, PIL and single-dot siblings only (FAISS is
optional and imported only when asked for).
"""

import torch
from transformers import Pipeline

from .pipeline_commercemm_index import ProductIndex
from .pipeline_commercemm_inputs import (
    ON_BAD_ITEMS,
    CallInputsMixin,
    base_model,
    check_products,
    checked_top_k,
    collate,
    default_product_ids,
    embed_rows,
    encode_item,
    normalize_item,
    product_list,
    split_depths,
    warn_about_inputs,
    warn_about_skipped,
)
from .pipeline_commercemm_onnx import features_model, split_backend
from .pipeline_commercemm_shards import read_embedding_shards


class CommerceMMProductSearchPipeline(CallInputsMixin, Pipeline):
    """Query a product index by text, image or both; each result is a list of `{"product_id", "score"}`.

    `backend="onnx"` (or `"onnx-int8"`), as for `product-embedding`, embeds the catalog and the queries with the
    graphs of `commercemm export` (in `<model folder>/onnx`, or `onnx_folder=`) through ONNX Runtime; given to
    `pipeline(...)` it applies to indexing and queries, given to a call it applies to that call's queries.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> from transformers import pipeline
        >>> from commercemm_hf import create_model_and_processor
        >>> from commercemm_hf.hub import save_hub_folder
        >>> model, processor = create_model_and_processor("tiny", texts=["red mug", "blue lamp"] * 5, vocab_size=300)
        >>> folder = save_hub_folder(model, processor, tempfile.mkdtemp())
        >>> search = pipeline("product-search", model=str(folder), trust_remote_code=True)
        >>> products = [{"image": Image.new("RGB", (64, 64), "red"), "text": "red mug"},
        ...             {"image": Image.new("RGB", (64, 64), "blue"), "text": "blue lamp"}]
        >>> len(search.index_products(products, product_ids=["p1", "p2"]))
        2
        >>> hits = search("red mug", top_k=5)  # or an image, or {"image": ..., "text": ...}
        >>> sorted(hit["product_id"] for hit in hits), sorted(hits[0])  # an untrained model: any order
        (['p1', 'p2'], ['product_id', 'score'])
        >>> index_folder = tempfile.mkdtemp()
        >>> search.save_index(index_folder)
        >>> search.load_index(index_folder).product_ids
        ['p1', 'p2']

    Large catalogs: embed once (`commercemm embed`, or `embed_products`), then an approximate index from the
    shards, with a metadata filter:

        >>> from datasets import Dataset
        >>> from commercemm_hf.search.embedding_job import embed_products
        >>> rows = Dataset.from_list([{**product, "product_id": product_id, "category": category} for product,
        ...                           product_id, category in zip(products, ["p1", "p2"], ["mugs", "lamps"])])
        >>> shards = tempfile.mkdtemp()
        >>> _ = embed_products(folder, rows, shards, metadata_columns=("category",), progress=False)
        ... # doctest: +ELLIPSIS
        process 0: embedded 2 products in ... s into ...
        >>> search = pipeline("product-search", model=str(folder), trust_remote_code=True, index_type="hnsw")
        >>> len(search.index_from_shards(shards))
        2
        >>> [hit["product_id"] for hit in search("red mug", top_k=5, filter={"category": "mugs"})]
        ['p1']
    """

    _load_tokenizer = True
    _load_image_processor = True
    _load_processor = False
    _load_feature_extractor = False

    def __init__(self, *args, index_backend: str = "auto", index_type: str = "flat", index_options: dict | None = None,
                 **kwargs):
        # the embedding backend (torch / onnx / onnx-int8) is the pipeline's: indexing uses it as well as queries
        self.backend_options = split_backend(kwargs)
        super().__init__(*args, **kwargs)
        self.index_backend, self.index_type, self.index_options = index_backend, index_type, dict(index_options or {})
        self.product_index: ProductIndex | None = None

    def _new_index(self, product_kind: str) -> ProductIndex:
        """An empty index of this pipeline's `index_type` (and `index_options`, e.g. `{"efSearch": 128}`)."""
        return ProductIndex(base_model(self.model).config.projection_dim, product_kind, self.index_backend,
                            self.index_type, **self.index_options)

    # ------------------------------------------------------------------------------------------------ the index

    def _features_model(self, backend_options: dict | None = None):
        options = {**self.backend_options, **(backend_options or {})}
        return features_model(self, base_model(self.model), options.get("backend", "torch"), options.get("onnx_folder"))

    def _embed_products(self, items: list[dict], batch_size: int, depths: dict) -> torch.Tensor:
        """The index-kind embeddings of normalised, checked `items` (see `check_products`)."""
        model = self._features_model()
        chunks = []
        for start in range(0, len(items), batch_size):
            batch = collate([encode_item(item, self.tokenizer, self.image_processor, model.config)
                             for item in items[start:start + batch_size]], self.tokenizer.pad_token_id)
            batch = {key: value.to(self.device) for key, value in batch.items()}
            with torch.no_grad():
                chunks.append(embed_rows(model, batch, depths)[self.product_index.product_kind].cpu())
        return torch.cat(chunks)

    def _add_checked(self, products: list, product_ids: list[str], batch_size: int, on_bad_items: str,
                     depths: dict) -> list:
        """Check, embed and append `products` a batch at a time (images are read a batch at a time); fills
        `self.skipped_products` and returns each product's text (None where skipped or image-only)."""
        self.skipped_products, texts = [], [None] * len(products)
        for start in range(0, len(products), batch_size):
            chunk = range(start, min(start + batch_size, len(products)))
            items, ids, skipped = check_products(products[chunk.start:chunk.stop], product_ids[chunk.start:chunk.stop],
                                                 self.product_index.product_kind, on_bad_items, first_index=start)
            self.skipped_products += skipped
            kept = sorted(set(chunk) - {row["index"] for row in skipped})
            for index, item in zip(kept, items):
                texts[index] = item["text"]
            if items:
                self.product_index.add(self._embed_products(items, batch_size, depths), ids)
        warn_about_skipped(self.skipped_products, len(products))
        return texts

    def index_products(self, products: list, product_ids: list | None = None, product_kind: str = "multimodal",
                       batch_size: int = 32, on_bad_items: str = "skip", **depths) -> ProductIndex:
        """Embed `products` (items with `"image"` and/or `"text"`) and start a new index with them.

        A product that cannot be embedded (an unreadable or missing image, no image or text where `product_kind`
        needs one) is skipped with one warning naming each (`self.skipped_products`: its index, id and reason), or
        with `on_bad_items="raise"` a ValueError naming it. Empty and truncated texts are warned about once, with
        counts. Images are read a batch at a time.
        """
        if product_kind not in ("multimodal", "image", "text"):
            raise ValueError(f"product_kind must be 'multimodal', 'image' or 'text', got {product_kind!r}.")
        products, depths = self._check_arguments(products, batch_size, on_bad_items, depths)
        product_ids = default_product_ids(products, product_ids)
        self.product_index = self._new_index(product_kind)
        texts = self._add_checked(products, product_ids, batch_size, on_bad_items, depths)
        if not len(self.product_index):
            raise ValueError(f"None of the {len(products)} products can be embedded"
                             + (f": {self.skipped_products[0]['reason']}" if self.skipped_products else "."))
        warn_about_inputs(texts, self.tokenizer, base_model(self.model).config, "products")
        return self.product_index

    def add(self, products: list, product_ids: list | None = None, batch_size: int = 32, on_bad_items: str = "skip",
            **depths) -> ProductIndex:
        """Embed only the new `products` and append them to the index; bad products are skipped and named (or
        raised) as in `index_products`, with their positions in `products`. Ids default to the next positions."""
        if self.product_index is None:
            return self.index_products(products, product_ids, batch_size=batch_size, on_bad_items=on_bad_items,
                                       **depths)
        products, depths = self._check_arguments(products, batch_size, on_bad_items, depths)
        product_ids = default_product_ids(products, product_ids, start=len(self.product_index))
        texts = self._add_checked(products, product_ids, batch_size, on_bad_items, depths)
        warn_about_inputs(texts, self.tokenizer, base_model(self.model).config, "products")
        return self.product_index

    @staticmethod
    def _check_arguments(products, batch_size, on_bad_items: str, depths: dict) -> tuple[list, dict]:
        """`(products as a list, the active depths)`; a clear error for a bad argument (a single product instead of a
        list, a non-positive batch size, an unknown keyword, which would otherwise be ignored)."""
        if on_bad_items not in ON_BAD_ITEMS:
            raise ValueError(f"on_bad_items must be one of {ON_BAD_ITEMS}, got {on_bad_items!r}.")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        depths = dict(depths)
        active = split_depths(depths)
        if depths:
            raise TypeError(f"Unknown arguments for indexing products: {sorted(depths)}.")
        return product_list(products), active

    def index_from_shards(self, folder: str, product_kind: str = "multimodal") -> ProductIndex:
        """Start a new index from the embedding shards `commercemm embed` wrote into `folder` (ids and metadata
        included), without re-embedding; products lacking `product_kind` are skipped and counted in a warning."""
        if product_kind not in ("multimodal", "image", "text"):
            raise ValueError(f"product_kind must be 'multimodal', 'image' or 'text', got {product_kind!r}.")
        self.product_index = self._new_index(product_kind)
        for vectors, ids, metadata in read_embedding_shards(folder, product_kind, expected_dim=self.product_index.dim):
            self.product_index.add(vectors, ids, metadata)
        return self.product_index

    def save_index(self, folder: str, overwrite: bool = False):
        if self.product_index is None:
            raise ValueError("There is no index to save: call index_products(...) first.")
        self.product_index.save(folder, overwrite=overwrite)

    def load_index(self, folder: str) -> ProductIndex:
        self.product_index = ProductIndex.load(folder, self.index_backend)
        return self.product_index

    # ------------------------------------------------------------------------------------------------ queries

    def _sanitize_parameters(self, top_k=None, filter=None, **kwargs):
        forward_params = {**split_depths(kwargs), **split_backend(kwargs)}
        if kwargs:
            raise ValueError(f"Unknown arguments for product-search: {sorted(kwargs)}.")
        postprocess_params = {}
        if filter is not None:
            if not isinstance(filter, dict):
                raise ValueError(f"filter must be a dict of metadata field -> value or list of values, got {filter!r}.")
            postprocess_params["filter"] = filter
        if top_k is not None:
            postprocess_params["top_k"] = checked_top_k(top_k)
        return {}, forward_params, postprocess_params

    def preprocess(self, item):
        if self.product_index is None:
            raise ValueError(
                "Index a catalog first: search.index_products(products, product_ids) or search.load_index(path)."
            )
        return encode_item(normalize_item(item), self.tokenizer, self.image_processor, base_model(self.model).config)

    def _forward(self, model_inputs, backend=None, onnx_folder=None, **depths):
        options = {name: value for name, value in (("backend", backend), ("onnx_folder", onnx_folder)) if value}
        with torch.no_grad():
            return {"query_embeds": embed_rows(self._features_model(options), model_inputs, depths)["preferred"]}

    def postprocess(self, model_outputs, top_k=10, filter=None):
        return self.product_index.query(model_outputs["query_embeds"], top_k, filter)[0]
