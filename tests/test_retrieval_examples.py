"""The demo picture (`retrieval_examples.png`) is legible: full titles wrapped, ranks and scores apart, a legend for
the frames, and the right product beside a miss with the rank the model gave it."""

import torch
from helpers import tiny_config, tiny_datasets
from PIL import Image

from commercemm_hf import CommerceMMModel
from commercemm_hf.evaluation.retrieval_examples import (
    COLOURS,
    ExampleRow,
    _font,
    draw_examples,
    retrieval_example_rows,
    save_retrieval_examples,
    wrap,
)


TITLES = [
    "Zig-zag Over-Ear Headphones Grey | Maple. This metal headphones comes in grey with a zigzag pattern – two-year "
    "warranty, long battery life.",
    "Pink Camo Plastic Bottle by Acme. SKU ACME-BOTTLE-0000000000000000017-PINK, built for the outdoors.",
    "Oak desk",
    "Orbit Brown Stripy Soccer Ball. Brown football from Orbit featuring a striped print.",
]
IMAGES = [Image.new("RGB", (40, 40), colour) for colour in ("grey", "pink", "brown", "orange")]


def lines_after(sheet, x, y) -> list[str]:
    """The text lines drawn at column `x` below `y`, top to bottom."""
    return [text for left, top, text in sorted(sheet.texts, key=lambda t: t[1]) if left == x and top > y]


def test_wrap_keeps_every_character_within_the_width():
    font = _font()
    for title in TITLES:
        lines = wrap(title, font, 128)
        assert "".join(lines).replace(" ", "") == title.replace(" ", "")
        assert all(font.getlength(line) <= 128 for line in lines)


def test_picture_has_full_titles_separate_scores_a_legend_and_the_right_product_beside_a_miss(tmp_path):
    rows = [
        ExampleRow("query", "grey headphones", None, top=[(0, 0.24), (3, 0.11)], gold=(0, 1, 0.24)),       # a hit
        ExampleRow("view", None, IMAGES[1], top=[(2, 0.31), (3, 0.2)], gold=(1, 17, 0.05)),                # a miss
    ]
    sheet = draw_examples(rows, IMAGES, TITLES, top_k=2)
    texts = [text for _, _, text in sheet.texts]
    # the legend names every frame colour
    assert {"the right product", "another product"} <= set(texts)
    assert any(text.startswith("the right product, outside the top k") for text in texts)
    legend, cells = sheet.frames[:3], sheet.frames[3:]  # the legend is drawn first, above every row
    assert [kind for _, kind in legend] == ["hit", "miss", "gold"]
    assert max(box[3] for box, _ in legend) < min(box[1] for box, _ in cells)
    # rank and score are separate texts with room between them: "#1  0.24" can never read "#10.24"
    font = _font()
    rank = min((y, x) for x, y, text in sheet.texts if text == "#1")[::-1]  # row 0's first product
    (score,) = [(x, y) for x, y, text in sheet.texts if text == "score 0.24" and y == rank[1]]
    assert score[0] >= rank[0] + font.getlength("#1") + 20
    assert "#10.24" not in " ".join(texts) and "#1 0.24" not in " ".join(texts)
    # full titles, wrapped under their product
    cell_titles = {}
    for x, y, text in sheet.texts:
        if text.startswith("#") or text.startswith("right: #"):
            cell_titles[(x, y)] = " ".join(lines_after(sheet, x, y))
    assert any(title.startswith(TITLES[0]) for title in cell_titles.values())
    # the miss: the right product (row 1) beside the top 2, framed blue, with its rank and score
    gold_frames = [box for box, kind in cells if kind == "gold"]
    assert len(gold_frames) == 1  # only the miss row gets one
    (right,) = [(x, y) for x, y, text in sheet.texts if text == "right: #17"]
    assert any(text == "score 0.05" and y == right[1] for _, y, text in sheet.texts)
    assert "".join(lines_after(sheet, right[0], right[1])).replace(" ", "").startswith(TITLES[1].replace(" ", ""))
    # what the frames say is what is drawn
    image = sheet.image
    for box, kind in sheet.frames:
        assert image.getpixel((box[0] + 1, (box[1] + box[3]) // 2)) == COLOURS[kind]
    image.save(tmp_path / "examples.png")
    assert Image.open(tmp_path / "examples.png").size == image.size


def test_rows_rank_the_right_product_over_the_whole_catalog(tmp_path, tokenizer, processor):
    _, omni = tiny_datasets(8)
    torch.manual_seed(0)
    model = CommerceMMModel(tiny_config(vocab_size=len(tokenizer))).eval()
    rows, catalog = retrieval_example_rows(model, processor, omni, per_type=2, top_k=3)
    assert [row.source_type for row in rows] == ["query", "query", "view", "view", "post", "post"]
    for row in rows:
        gold, rank, score = row.gold
        shown = [index for index, _ in row.top]
        if gold in shown:
            assert rank == shown.index(gold) + 1
        else:
            assert rank > 3 and score <= row.top[-1][1] + 1e-6
        assert catalog[gold]["product_id"] in set(omni["product_id"])
    path = save_retrieval_examples(model, processor, omni, tmp_path / "retrieval_examples.png", top_k=3)
    assert Image.open(path).size[0] > 5 * 128
