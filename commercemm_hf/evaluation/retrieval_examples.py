"""A picture of example retrievals: a few sources of each Omni type with the products a model ranks first.

Each row shows the source (a query as text, another view or a tagged post as its image with its caption) and the top-k
products with their scores, framed green when the product is the right one and red otherwise.
"""

import textwrap

import torch
from PIL import Image, ImageDraw, ImageFont

from .retrieval import distinct_products
from .zero_shot import SOURCE_EMBEDDING, embed


CELL = 128
MARGIN = 8
CAPTION = 30


def _text_card(text: str, size: int) -> Image.Image:
    card = Image.new("RGB", (size, size), (245, 245, 245))
    draw = ImageDraw.Draw(card)
    draw.multiline_text((6, 6), "\n".join(textwrap.wrap(text, width=18)[:8]), fill=(20, 20, 20),
                        font=ImageFont.load_default())
    return card


def _thumbnail(image, size: int) -> Image.Image:
    image = image if isinstance(image, Image.Image) else Image.open(image)
    return image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)


@torch.no_grad()
def save_retrieval_examples(model, processor, omni_dataset, path, per_type: int = 2, top_k: int = 5,
                            batch_size: int = 64, **depths) -> str:
    """Draw `per_type` sources of each type in `omni_dataset` with their `top_k` retrieved products; save a PNG."""
    product_rows, _ = distinct_products(omni_dataset["product_id"])
    catalog = omni_dataset.select(product_rows)
    catalog_ids = list(catalog["product_id"])
    product_embeds = embed(model, processor, catalog["image"], catalog["text"], "multimodal", batch_size, **depths)
    source_types = list(omni_dataset["source_type"])
    rows = []
    for source_type, kind in SOURCE_EMBEDDING.items():
        of_type = [i for i, value in enumerate(source_types) if value == source_type]
        chosen = of_type[:: max(1, len(of_type) // per_type)][:per_type]  # spread over the catalog's products
        if not chosen:
            continue
        sources = omni_dataset.select(chosen)
        source_embeds = embed(model, processor, sources["source_image"] if kind != "text" else None,
                              sources["source_text"] if kind != "image" else None, kind, batch_size, **depths)
        scores, ranked = (source_embeds @ product_embeds.t()).topk(min(top_k, len(catalog_ids)), dim=1)
        for index in range(len(chosen)):
            source = sources[index]
            rows.append((source_type, source, scores[index].tolist(), ranked[index].tolist()))

    width = MARGIN + (CELL + MARGIN) * (top_k + 1)
    height = MARGIN + (CELL + CAPTION + MARGIN) * max(1, len(rows))
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for row_index, (source_type, source, scores, ranked) in enumerate(rows):
        top = MARGIN + row_index * (CELL + CAPTION + MARGIN)
        if source["source_image"] is not None:
            cell = _thumbnail(source["source_image"], CELL)
        else:
            cell = _text_card(source["source_text"], CELL)
        sheet.paste(cell, (MARGIN, top))
        label = source_type if source["source_image"] is None or not source["source_text"] else \
            f"{source_type}: {source['source_text'][:20]}"
        draw.text((MARGIN, top + CELL + 2), label, fill="black", font=font)
        for rank, (score, product_index) in enumerate(zip(scores, ranked)):
            left = MARGIN + (rank + 1) * (CELL + MARGIN)
            sheet.paste(_thumbnail(catalog[product_index]["image"], CELL), (left, top))
            correct = catalog_ids[product_index] == source["product_id"]
            draw.rectangle([left - 3, top - 3, left + CELL + 2, top + CELL + 2], outline=(0, 160, 0) if correct
                           else (200, 0, 0), width=3)
            draw.text((left, top + CELL + 2), f"#{rank + 1} {score:.2f} {catalog[product_index]['text'][:14]}",
                      fill="black", font=font)
    sheet.save(path)
    return str(path)


__all__ = ["save_retrieval_examples"]
