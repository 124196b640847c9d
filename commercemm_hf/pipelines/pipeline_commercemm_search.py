"""`product-search`: index a catalog once, then query it by text, image or both.

The index holds one L2-normalised embedding per product (by default the multimodal one) and its id. Search is exact:
a matrix product in torch, or FAISS's flat inner-product index when `faiss` is installed (same results). The index
saves (raw float32 embeddings + a JSON sidecar; nothing is pickled), loads, and grows with `add(...)` without
re-embedding what it holds.

This file travels as Hugging Face remote code: transformers, torch, PIL and single-dot siblings only (FAISS is
optional and imported only when asked for).
"""

import json
import os

import torch
from transformers import Pipeline

from .pipeline_commercemm_inputs import (ON_BAD_ITEMS, base_model, check_products, collate, default_product_ids,
                                          embed_rows, encode_item, normalize_item, split_depths, warn_about_inputs,
                                          warn_about_skipped)


INDEX_EMBEDDINGS = "product_embeddings.f32"
INDEX_METADATA = "product_index.json"


class ProductIndex:
    """Product embeddings `(n, dim)` with their ids; exact top-k search in torch or FAISS."""

    def __init__(self, dim: int, product_kind: str = "multimodal", backend: str = "auto"):
        if backend not in ("auto", "torch", "faiss"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'faiss', got {backend!r}.")
        self.dim, self.product_kind = dim, product_kind
        self.embeddings = torch.zeros(0, dim)
        self.product_ids: list[str] = []
        self.backend = backend
        self._faiss_index = None
        if backend == "faiss":
            self._faiss()  # fail now, not at the first search, if FAISS is missing

    def __len__(self) -> int:
        return len(self.product_ids)

    def _faiss(self):
        try:
            import faiss
        except ImportError as error:
            raise ImportError("backend='faiss' needs the faiss-cpu package (pip install faiss-cpu).") from error
        return faiss

    def _use_faiss(self) -> bool:
        if self.backend == "torch":
            return False
        if self.backend == "faiss":
            return True
        try:
            import faiss  # noqa: F401
        except ImportError:
            return False
        return True

    def add(self, embeddings: torch.Tensor, product_ids: list[str]):
        embeddings = embeddings.detach().float().cpu()
        if embeddings.dim() != 2 or embeddings.shape[1] != self.dim or len(product_ids) != embeddings.shape[0]:
            raise ValueError(f"Expected ({len(product_ids)}, {self.dim}) embeddings, got {tuple(embeddings.shape)}.")
        product_ids = [str(product_id) for product_id in product_ids]
        duplicates = sorted((set(product_ids) & set(self.product_ids)) | {p for p in product_ids if product_ids.count(p) > 1})
        if duplicates:
            raise ValueError(f"Product ids already in the index or repeated: {duplicates[:10]}.")
        if torch.isnan(embeddings).any():
            raise ValueError("Some product embeddings are NaN: every product needs the modalities of the index's kind.")
        self.embeddings = torch.cat([self.embeddings, embeddings])
        self.product_ids.extend(product_ids)
        if self._faiss_index is not None:
            self._faiss_index.add(embeddings.numpy())

    def search(self, queries: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and row indices of the `top_k` best products for each query, best first."""
        if not len(self):
            raise ValueError("The product index is empty: call index_products(...) or load_index(...) first.")
        queries = queries.detach().float().cpu()
        top_k = min(top_k, len(self))
        if self._use_faiss():
            if self._faiss_index is None:
                faiss = self._faiss()
                self._faiss_index = faiss.IndexFlatIP(self.dim)
                self._faiss_index.add(self.embeddings.numpy())
            scores, indices = self._faiss_index.search(queries.numpy(), top_k)
            return torch.from_numpy(scores), torch.from_numpy(indices)
        return (queries @ self.embeddings.t()).topk(top_k, dim=1)

    def save(self, folder: str):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, INDEX_EMBEDDINGS), "wb") as handle:
            handle.write(self.embeddings.contiguous().numpy().astype("<f4").tobytes())
        with open(os.path.join(folder, INDEX_METADATA), "w") as handle:
            json.dump({"dim": self.dim, "product_kind": self.product_kind, "count": len(self),
                       "product_ids": self.product_ids, "format": "float32 little-endian, row-major"}, handle)

    @classmethod
    def load(cls, folder: str, backend: str = "auto") -> "ProductIndex":
        with open(os.path.join(folder, INDEX_METADATA)) as handle:
            meta = json.load(handle)
        with open(os.path.join(folder, INDEX_EMBEDDINGS), "rb") as handle:
            data = bytearray(handle.read())
        expected = meta["count"] * meta["dim"] * 4
        if len(data) != expected or len(meta["product_ids"]) != meta["count"]:
            raise ValueError(f"The index in {folder} is corrupt: {len(data)} bytes of embeddings, expected {expected}.")
        index = cls(meta["dim"], meta["product_kind"], backend)
        embeddings = torch.frombuffer(data, dtype=torch.float32).reshape(meta["count"], meta["dim"]).clone()
        index.add(embeddings, meta["product_ids"])
        return index


class CommerceMMProductSearchPipeline(Pipeline):
    """Query a product index by text, image or both; each result is a list of `{"product_id", "score"}`.

    Example:
        >>> # from transformers import pipeline
        >>> # search = pipeline("product-search", model="outputs/commercemm-tiny", trust_remote_code=True)
        >>> # search.index_products([{"image": img, "text": "red mug"}, ...], product_ids=["p1", ...])
        >>> # search("red mug", top_k=5)          # or an image, or {"image": ..., "text": ...}
        >>> # search.save_index("catalog_index"); search.load_index("catalog_index")
    """

    _load_tokenizer = True
    _load_image_processor = True
    _load_processor = False
    _load_feature_extractor = False

    def __init__(self, *args, index_backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.index_backend = index_backend
        self.product_index: ProductIndex | None = None

    # ------------------------------------------------------------------------------------------------ the index

    def _embed_products(self, products, product_kind, batch_size, depths) -> torch.Tensor:
        model = base_model(self.model)
        chunks = []
        for start in range(0, len(products), batch_size):
            items = [normalize_item(item) for item in products[start:start + batch_size]]
            for offset, item in enumerate(items):
                needs = {"multimodal": ("image", "text"), "image": ("image",), "text": ("text",)}[product_kind]
                if any(item[key] is None for key in needs):
                    raise ValueError(f"Product {start + offset} lacks the {' and '.join(needs)} a {product_kind} index needs.")
            batch = collate([encode_item(item, self.tokenizer, self.image_processor, model.config) for item in items],
                            self.tokenizer.pad_token_id)
            batch = {key: value.to(self.device) for key, value in batch.items()}
            with torch.no_grad():
                chunks.append(embed_rows(model, batch, depths)[product_kind].cpu())
        return torch.cat(chunks)

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
        if on_bad_items not in ON_BAD_ITEMS:
            raise ValueError(f"on_bad_items must be one of {ON_BAD_ITEMS}, got {on_bad_items!r}.")
        products = list(products)
        product_ids = default_product_ids(products, product_ids)
        self.product_index = ProductIndex(base_model(self.model).config.projection_dim, product_kind, self.index_backend)
        self.skipped_products, texts = [], [None] * len(products)
        for start in range(0, len(products), batch_size):
            chunk = range(start, min(start + batch_size, len(products)))
            items, ids, skipped = check_products(products[chunk.start:chunk.stop], product_ids[chunk.start:chunk.stop],
                                                 product_kind, on_bad_items, first_index=start)
            self.skipped_products += skipped
            kept = sorted(set(chunk) - {row["index"] for row in skipped})
            for index, item in zip(kept, items):
                texts[index] = item["text"]
            if items:
                self.add(items, ids, batch_size=batch_size, **depths)
        warn_about_skipped(self.skipped_products, len(products))
        if not len(self.product_index):
            raise ValueError(f"None of the {len(products)} products can be embedded"
                             + (f": {self.skipped_products[0]['reason']}" if self.skipped_products else "."))
        warn_about_inputs(texts, self.tokenizer, base_model(self.model).config, "products")
        return self.product_index

    def add(self, products: list, product_ids: list | None = None, batch_size: int = 32, **depths) -> ProductIndex:
        """Embed only the new `products` and append them to the index."""
        if self.product_index is None:
            return self.index_products(products, product_ids, batch_size=batch_size, **depths)
        if product_ids is None:
            product_ids = [item.get("product_id", item.get("id")) if isinstance(item, dict) else None for item in products]
            if any(product_id is None for product_id in product_ids):
                product_ids = [str(len(self.product_index) + i) for i in range(len(products))]
        if len(product_ids) != len(products):
            raise ValueError(f"{len(products)} products but {len(product_ids)} product ids.")
        embeddings = self._embed_products(list(products), self.product_index.product_kind, batch_size, split_depths(depths))
        self.product_index.add(embeddings, list(product_ids))
        return self.product_index

    def save_index(self, folder: str):
        if self.product_index is None:
            raise ValueError("There is no index to save: call index_products(...) first.")
        self.product_index.save(folder)

    def load_index(self, folder: str) -> ProductIndex:
        self.product_index = ProductIndex.load(folder, self.index_backend)
        return self.product_index

    # ------------------------------------------------------------------------------------------------ queries

    def _sanitize_parameters(self, top_k=None, **kwargs):
        forward_params = split_depths(kwargs)
        if kwargs:
            raise ValueError(f"Unknown arguments for product-search: {sorted(kwargs)}.")
        postprocess_params = {}
        if top_k is not None:
            if not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
            postprocess_params["top_k"] = top_k
        return {}, forward_params, postprocess_params

    def preprocess(self, item):
        if self.product_index is None:
            raise ValueError("Index a catalog first: search.index_products(products, product_ids) or search.load_index(path).")
        return encode_item(normalize_item(item), self.tokenizer, self.image_processor, base_model(self.model).config)

    def _forward(self, model_inputs, **depths):
        with torch.no_grad():
            return {"query_embeds": embed_rows(base_model(self.model), model_inputs, depths)["preferred"]}

    def postprocess(self, model_outputs, top_k=10):
        scores, indices = self.product_index.search(model_outputs["query_embeds"], top_k)
        ids = self.product_index.product_ids
        return [{"product_id": ids[int(i)], "score": float(s)} for s, i in zip(scores[0], indices[0])]
