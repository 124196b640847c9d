"""Zero-shot retrieval evaluation of a `CommerceMMModel` on Omni rows and image-text rows.

Each Omni source type retrieves the catalog's products with the embedding it has (DESIGN.md section 2): a query by
its text embedding, another view by its image embedding, a tagged post by its multimodal embedding; products are
represented by their multimodal embedding unless `product_kind` says otherwise. Metrics break ties pessimistically
(see `retrieval_metrics`).
"""

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from ..data.schema import DIRECTION_OF, SOURCE_EMBEDDING, with_old_direction_names
from .retrieval import distinct_products, embedding_retrieval_metrics


def processed_batches(model, processor, images: Sequence | None, texts: Sequence[str] | None, batch_size: int):
    """Processor outputs for consecutive slices of `batch_size` items (images, texts or both), on `model`'s device."""
    device = next(model.parameters()).device
    count = len(texts) if images is None else len(images)
    for start in range(0, count, batch_size):
        part = slice(start, start + batch_size)
        inputs = processor(images=list(images[part]) if images is not None else None,
                           text=list(texts[part]) if texts is not None else None,
                           padding=True, truncation=True, return_tensors="pt")
        yield {key: value.to(device) for key, value in inputs.items() if key != "token_type_ids"}


@torch.no_grad()
def embed(model, processor, images: Sequence | None = None, texts: Sequence[str] | None = None,
          kind: str = "multimodal", batch_size: int = 32, text_depth: int | None = None, image_depth: int | None = None,
          multimodal_depth: int | None = None) -> torch.Tensor:
    """L2-normalised `(n, projection_dim)` embeddings of `kind` ("text", "image" or "multimodal") for n items."""
    if kind == "multimodal" and len(texts) != len(images):
        raise ValueError(f"Multimodal embeddings need one text per image: {len(images)} images, {len(texts)} texts.")
    chunks = []
    for inputs in processed_batches(model, processor, images if kind != "text" else None,
                                    texts if kind != "image" else None, batch_size):
        features = model.get_item_features(**inputs, kind=kind, text_depth=text_depth, image_depth=image_depth,
                                           multimodal_depth=multimodal_depth)
        chunks.append(F.normalize(features.pooler_output.float(), dim=-1).cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, model.config.projection_dim)


def _named(metrics: dict, prefix: str) -> dict[str, float]:
    return {f"{prefix}_{name}": float(value) for name, value in metrics.items()}


@torch.no_grad()
def omni_retrieval_metrics(model, processor, omni_dataset, batch_size: int = 32, product_kind: str = "multimodal",
                           ks=(1, 5, 10), **depths) -> dict[str, float]:
    """Recall@k / MRR / nDCG@10 of each source type against every distinct product of `omni_dataset` (rows with
    `source_type`, `source_text`, `source_image`, `product_id`, `image`, `text`), named after the direction's
    fine-tuning task (`query_to_product_recall@1`, `image_to_product_mrr`, `product_to_product_ndcg@10`; see
    `commercemm_hf.data.schema.DIRECTIONS`), each also under its old name (`view_to_product_*`, `post_to_product_*`)."""
    was_training = model.training
    model.eval()
    product_rows, product_of_row = distinct_products(omni_dataset["product_id"])
    catalog = omni_dataset.select(product_rows)
    product_embeds = embed(model, processor, catalog["image"], catalog["text"], product_kind, batch_size, **depths)
    metrics = {}
    source_types = omni_dataset["source_type"]
    for source_type, kind in SOURCE_EMBEDDING.items():
        rows = [i for i, value in enumerate(source_types) if value == source_type]
        if not rows:
            continue
        sources = omni_dataset.select(rows)
        source_embeds = embed(model, processor, sources["source_image"] if kind != "text" else None,
                              sources["source_text"] if kind != "image" else None, kind, batch_size, **depths)
        gold = product_of_row[rows]
        metrics.update(_named(embedding_retrieval_metrics(source_embeds, product_embeds, gold, ks=ks),
                              DIRECTION_OF[source_type].name))
    model.train(was_training)
    return with_old_direction_names(metrics)


@torch.no_grad()
def image_text_retrieval_metrics(model, processor, dataset, batch_size: int = 32, ks=(1, 5, 10),
                                 **depths) -> dict[str, float]:
    """Image->text and text->image retrieval among the rows of an image-text dataset (`image`, `text`)."""
    was_training = model.training
    model.eval()
    image_embeds = embed(model, processor, dataset["image"], None, "image", batch_size, **depths)
    text_embeds = embed(model, processor, None, dataset["text"], "text", batch_size, **depths)
    gold = torch.arange(len(dataset))
    metrics = _named(embedding_retrieval_metrics(image_embeds, text_embeds, gold, ks=ks), "image_to_text")
    metrics.update(_named(embedding_retrieval_metrics(text_embeds, image_embeds, gold, ks=ks), "text_to_image"))
    model.train(was_training)
    return metrics


__all__ = ["SOURCE_EMBEDDING", "embed", "processed_batches", "image_text_retrieval_metrics", "omni_retrieval_metrics"]
