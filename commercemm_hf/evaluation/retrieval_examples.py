"""A picture of example retrievals: a few sources of each Omni type with the products a model ranks first.

Each row shows the source (a query as text, another view or a tagged post as its image, with its caption), then the
top-k products, each with its rank and score on a line of their own and its full title wrapped below, framed green
when it is the right product and red otherwise. When the right product is not among them, a last column shows it,
framed blue, with the rank and score the model gave it. A legend at the top says what the frames mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image, ImageDraw, ImageFont

from ..data.schema import SOURCE_EMBEDDING
from .retrieval import distinct_products
from .zero_shot import embed


CELL = 128
MARGIN = 10
GAP = 14  # between cells: room for the frames
FONT_SIZE = 12
LINE = FONT_SIZE + 4
LEGEND_HEIGHT = 30
FRAME_WIDTH = 3
COLOURS = {"hit": (0, 150, 0), "miss": (200, 0, 0), "gold": (30, 90, 220)}
LEGEND = (("hit", "the right product"), ("miss", "another product"),
          ("gold", "the right product, outside the top k (with its rank)"))


def _font(size: int = FONT_SIZE):
    """DejaVu Sans where installed (it has the dashes, accents and symbols of real titles), else Pillow's own."""
    for load in (lambda: ImageFont.truetype("DejaVuSans.ttf", size), lambda: ImageFont.load_default(size=size)):
        try:
            return load()
        except (TypeError, OSError):
            continue
    return ImageFont.load_default()


def wrap(text: str, font, width: int) -> list[str]:
    """`text` broken into lines no wider than `width` pixels (a word longer than a line is cut into pieces); every
    character is kept."""
    lines, line = [], ""
    for word in text.split():
        while font.getlength(word) > width:  # a long word (an SKU, a URL): cut where it fills a line
            cut = max(1, max(i for i in range(1, len(word) + 1) if font.getlength(word[:i]) <= width))
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:cut])
            word = word[cut:]
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


@dataclass
class ExampleRow:
    """One source and what the model retrieved for it: `top` is `[(product row, score), ...]` best first, `gold` the
    right product's `(product row, rank, score)`."""

    source_type: str
    source_text: str | None
    source_image: object
    top: list[tuple[int, float]]
    gold: tuple[int, int, float]


@dataclass
class Sheet:
    """The picture and what was drawn on it (texts with their positions, frames with their kind), for tests and for
    anyone laying out other pictures the same way."""

    image: Image.Image
    texts: list[tuple[int, int, str]] = field(default_factory=list)
    frames: list[tuple[tuple[int, int, int, int], str]] = field(default_factory=list)


def _thumbnail(image, size: int) -> Image.Image:
    image = image if isinstance(image, Image.Image) else Image.open(image)
    return image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)


def _card_lines(text: str, size: int, font) -> list[str]:
    return wrap(text, font, size - 12)


def _fits_card(text: str, size: int, font) -> bool:
    return len(_card_lines(text, size, font)) <= (size - 12) // LINE


def _text_card(text: str, size: int, font) -> Image.Image:
    card = Image.new("RGB", (size, size), (245, 245, 245))
    lines = _card_lines(text, size, font)
    if not _fits_card(text, size, font):  # then the full text is written under the card
        lines = lines[:(size - 12) // LINE - 1] + ["..."]
    ImageDraw.Draw(card).multiline_text((6, 6), "\n".join(lines), fill=(20, 20, 20), font=font, spacing=4)
    return card


def _source_caption(row, font) -> list[str]:
    """The source's text under its cell, unless its text card already shows all of it."""
    if not row.source_text or (row.source_image is None and _fits_card(row.source_text, CELL, font)):
        return []
    return wrap(row.source_text, font, CELL)


def draw_examples(rows: list[ExampleRow], product_images: list, product_titles: list[str], top_k: int) -> Sheet:
    """Lay out `rows` (see `ExampleRow`) over `product_images` / `product_titles` (indexed by product row)."""
    font = _font()
    text_width = CELL
    columns = top_k + 2  # the source, the top k, the right product when missed

    def product_lines(title: str) -> int:
        return 1 + len(wrap(title, font, text_width))

    def source_lines(row: ExampleRow) -> int:
        return 1 + len(_source_caption(row, font))

    heights = []
    for row in rows:
        shown = [index for index, _ in row.top] + [row.gold[0]]
        lines = max([source_lines(row)] + [product_lines(product_titles[index]) for index in shown])
        heights.append(CELL + 6 + lines * LINE)
    width = MARGIN * 2 + columns * CELL + (columns - 1) * GAP
    height = MARGIN * 2 + LEGEND_HEIGHT + sum(heights) + GAP * max(0, len(rows) - 1)
    sheet = Sheet(Image.new("RGB", (width, max(height, MARGIN * 2 + LEGEND_HEIGHT)), "white"))
    draw = ImageDraw.Draw(sheet.image)

    def text(x: int, y: int, value: str, fill=(0, 0, 0)):
        draw.text((x, y), value, fill=fill, font=font)
        sheet.texts.append((x, y, value))

    def frame(box: tuple[int, int, int, int], kind: str):
        draw.rectangle(box, outline=COLOURS[kind], width=FRAME_WIDTH)
        sheet.frames.append((box, kind))

    def caption(left: int, top: int, rank_label: str, score: float, title: str, colour):
        # rank on the left, score on the right of the same line: "#1" and "0.24" never run together
        text(left, top, rank_label, fill=colour)
        score_text = f"score {score:.2f}"
        text(left + CELL - int(font.getlength(score_text)), top, score_text, fill=(60, 60, 60))
        for number, line in enumerate(wrap(title, font, text_width)):
            text(left, top + LINE * (number + 1), line)

    # the legend
    x = MARGIN
    for kind, meaning in LEGEND:
        frame((x, MARGIN + 2, x + 22, MARGIN + 18), kind)
        text(x + 30, MARGIN + 3, meaning)
        x += 30 + int(font.getlength(meaning)) + 24

    top = MARGIN + LEGEND_HEIGHT
    for row, row_height in zip(rows, heights):
        source = (_thumbnail(row.source_image, CELL) if row.source_image is not None
                  else _text_card(row.source_text or "", CELL, font))
        sheet.image.paste(source, (MARGIN, top))
        text(MARGIN, top + CELL + 6, row.source_type)
        for number, line in enumerate(_source_caption(row, font)):
            text(MARGIN, top + CELL + 6 + LINE * (number + 1), line)
        gold_index, gold_rank, gold_score = row.gold
        for rank, (product_index, score) in enumerate(row.top, start=1):
            left = MARGIN + rank * (CELL + GAP)
            sheet.image.paste(_thumbnail(product_images[product_index], CELL), (left, top))
            kind = "hit" if product_index == gold_index else "miss"
            frame((left - FRAME_WIDTH, top - FRAME_WIDTH, left + CELL + FRAME_WIDTH - 1,
                   top + CELL + FRAME_WIDTH - 1), kind)
            caption(left, top + CELL + 6, f"#{rank}", score, product_titles[product_index], COLOURS[kind])
        if gold_index not in [index for index, _ in row.top]:
            left = MARGIN + (len(row.top) + 1) * (CELL + GAP)
            sheet.image.paste(_thumbnail(product_images[gold_index], CELL), (left, top))
            frame((left - FRAME_WIDTH, top - FRAME_WIDTH, left + CELL + FRAME_WIDTH - 1,
                   top + CELL + FRAME_WIDTH - 1), "gold")
            caption(left, top + CELL + 6, f"right: #{gold_rank}", gold_score, product_titles[gold_index],
                    COLOURS["gold"])
        top += row_height + GAP
    return sheet


@torch.no_grad()
def retrieval_example_rows(model, processor, omni_dataset, per_type: int = 2, top_k: int = 5, batch_size: int = 64,
                           **depths) -> tuple[list[ExampleRow], object]:
    """`per_type` sources of each type in `omni_dataset`, spread over its products, with their `top_k` products and
    the right product's rank (1 + the products scored higher); returns the rows and the catalog (distinct products)."""
    product_rows, _ = distinct_products(omni_dataset["product_id"])
    catalog = omni_dataset.select(product_rows)
    catalog_ids = list(catalog["product_id"])
    product_embeds = embed(model, processor, catalog["image"], catalog["text"], "multimodal", batch_size, **depths)
    source_types = list(omni_dataset["source_type"])
    rows = []
    for source_type, kind in SOURCE_EMBEDDING.items():
        of_type = [i for i, value in enumerate(source_types) if value == source_type]
        chosen = of_type[:: max(1, len(of_type) // per_type)][:per_type]
        if not chosen:
            continue
        sources = omni_dataset.select(chosen)
        source_embeds = embed(model, processor, sources["source_image"] if kind != "text" else None,
                              sources["source_text"] if kind != "image" else None, kind, batch_size, **depths)
        all_scores = source_embeds @ product_embeds.t()
        scores, ranked = all_scores.topk(min(top_k, len(catalog_ids)), dim=1)
        for index in range(len(chosen)):
            source = sources[index]
            gold = catalog_ids.index(source["product_id"])
            gold_score = float(all_scores[index, gold])
            rank = 1 + int((all_scores[index] > gold_score).sum())
            rows.append(ExampleRow(source_type, source["source_text"] or None, source["source_image"],
                                   list(zip(ranked[index].tolist(), scores[index].tolist())), (gold, rank, gold_score)))
    return rows, catalog


def save_retrieval_examples(model, processor, omni_dataset, path, per_type: int = 2, top_k: int = 5,
                            batch_size: int = 64, **depths) -> str:
    """Draw `per_type` sources of each type in `omni_dataset` with their `top_k` retrieved products (and the right
    product beside a miss); save a PNG at `path` and return it.

    Example:
        >>> import os, tempfile
        >>> from PIL import Image
        >>> from commercemm_hf import CommerceMMModel
        >>> from commercemm_hf.evaluation.retrieval_examples import save_retrieval_examples
        >>> from commercemm_hf.training.recipes import prepare_demo
        >>> demo = prepare_demo(num_products=20, vocab_size=300)
        >>> model = CommerceMMModel(demo.config)
        >>> path = save_retrieval_examples(model, demo.processor, demo.validation_omni,
        ...                                os.path.join(tempfile.mkdtemp(), "retrieval_examples.png"))
        >>> Image.open(path).format
        'PNG'
    """
    rows, catalog = retrieval_example_rows(model, processor, omni_dataset, per_type, top_k, batch_size, **depths)
    sheet = draw_examples(rows, catalog["image"], list(catalog["text"]), top_k)
    sheet.image.save(path)
    return str(path)


__all__ = ["ExampleRow", "Sheet", "draw_examples", "retrieval_example_rows", "save_retrieval_examples", "wrap"]
