"""The row schema of the package (DESIGN.md section 3): what a row of each kind holds, the Omni source types and
the retrieval direction each one is, stable integer ids for product ids, and the converters from demo catalog rows.

Every real-data path (loading, fine-tuning, evaluation, the CLI) reads these names from here; the SYNTHETIC demo
catalog (`commercemm_hf.data.demo`) only produces rows in this schema. The remote-code folders (`modeling/`,
`processing/`, `pipelines/`) may import only inside their own folder, so the few names they need are restated
there with a comment pointing here.

* Image-text rows: `image`, `text`, and optionally `label`, `attribute_labels`, `product_id`.
* Omni-Retrieval rows (`OMNI_FEATURES`): `source_type` ("query" | "view" | "post"), `source_text`, `source_image`,
  `product_id`, and the product's `image` and `text`. A query has a text only, a view an image only, a post both.
* Each source type is one retrieval direction to the product (`DIRECTIONS`): its name is both the fine-tuning
  task (`--task`) and the prefix of its metrics (`image_to_product_recall@1`). Metrics used to be named after the
  source type (`view_to_product_*`, `post_to_product_*`); `with_old_direction_names` still writes those keys and
  `direction_metric` reads either, so results files written before keep working.

Example:
    >>> [direction.name for direction in DIRECTIONS]
    ['query_to_product', 'image_to_product', 'product_to_product']
    >>> DIRECTION_OF["view"].source_kind, TASK_SOURCE_TYPE["product_to_product"]
    ('image', 'post')
    >>> source_type_of(has_text=True, has_image=True)
    'post'
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

from datasets import Dataset, DatasetDict, Features, Image, List, Value


# ----------------------------------------------------------------------------------------------------------------
# Source types and retrieval directions
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Direction:
    """One Omni retrieval direction: a source type, its name (fine-tuning task and metric prefix), the embedding
    that represents the source (`text`, `image` or `multimodal`; products are multimodal), what its source text is
    called in messages, and the metric prefix used before the name matched the task (None if it always did)."""

    source_type: str
    name: str
    source_kind: str
    text_name: str | None
    old_name: str | None = None

    @property
    def has_text(self) -> bool:
        return self.source_kind != "image"

    @property
    def has_image(self) -> bool:
        return self.source_kind != "text"


DIRECTIONS: tuple[Direction, ...] = (
    Direction("query", "query_to_product", "text", "query text"),
    Direction("view", "image_to_product", "image", None, old_name="view_to_product"),
    Direction("post", "product_to_product", "multimodal", "post caption", old_name="post_to_product"),
)
"""The three Omni directions, in the order metrics and tables list them."""

SOURCE_TYPES: tuple[str, ...] = tuple(direction.source_type for direction in DIRECTIONS)
DIRECTION_OF: dict[str, Direction] = {direction.source_type: direction for direction in DIRECTIONS}
#: fine-tuning task -> the Omni source type it trains on (the image<->text tasks use the products' own rows)
TASK_SOURCE_TYPE: dict[str, str] = {direction.name: direction.source_type for direction in DIRECTIONS}
#: source type -> the embedding a source of that type is represented by
SOURCE_EMBEDDING: dict[str, str] = {direction.source_type: direction.source_kind for direction in DIRECTIONS}
#: metric prefix reported before -> the direction's name now
OLD_DIRECTION_NAMES: dict[str, str] = {d.old_name: d.name for d in DIRECTIONS if d.old_name}


def source_type_of(has_text: bool, has_image: bool) -> str | None:
    """The source type of a row that has a source text and/or a source image (None when it has neither).

    Example:
        >>> source_type_of(True, False), source_type_of(False, True), source_type_of(False, False)
        ('query', 'view', None)
    """
    return next((d.source_type for d in DIRECTIONS if (d.has_text, d.has_image) == (bool(has_text), bool(has_image))),
                None)


def with_old_direction_names(metrics: dict[str, float]) -> dict[str, float]:
    """`metrics` plus a copy of each direction metric under its old prefix (`view_to_product_mrr` beside
    `image_to_product_mrr`), for readers of the old keys.

    Example:
        >>> with_old_direction_names({"image_to_product_mrr": 0.5, "query_to_product_mrr": 0.25})
        {'image_to_product_mrr': 0.5, 'query_to_product_mrr': 0.25, 'view_to_product_mrr': 0.5}
    """
    out = dict(metrics)
    for old, new in OLD_DIRECTION_NAMES.items():
        out.update({old + key[len(new):]: value for key, value in metrics.items() if key.startswith(new + "_")})
    return out


_OLD_NAME = re.compile(r"(^|[_/])(" + "|".join(map(re.escape, OLD_DIRECTION_NAMES)) + r")_")


def without_old_direction_names(metrics: dict) -> dict:
    """`metrics` without the old-name copies whose new key is present, also behind a prefix such as `eval_`
    (for tables and model cards: one row each). Results that hold only the old names keep them.

    Example:
        >>> without_old_direction_names({"image_to_product_mrr": 0.5, "view_to_product_mrr": 0.5,
        ...                              "eval_post_to_product_mrr": 0.25, "x": 1})
        {'image_to_product_mrr': 0.5, 'eval_post_to_product_mrr': 0.25, 'x': 1}
    """
    def new_key(key: str) -> str:
        return _OLD_NAME.sub(lambda match: match.group(1) + OLD_DIRECTION_NAMES[match.group(2)] + "_", key, count=1)

    return {key: value for key, value in metrics.items() if new_key(key) == key or new_key(key) not in metrics}


def direction_metric(metrics: dict, name: str, metric: str, default: float = math.nan) -> float:
    """`metrics[f"{name}_{metric}"]`, else the same metric under the direction's old prefix, else `default`.

    Example:
        >>> direction_metric({"view_to_product_recall@10": 0.75}, "image_to_product", "recall@10")
        0.75
    """
    key = f"{name}_{metric}"
    if key in metrics:
        return metrics[key]
    old = next((old for old, new in OLD_DIRECTION_NAMES.items() if new == name), None)
    return metrics.get(f"{old}_{metric}", default) if old else default


# ----------------------------------------------------------------------------------------------------------------
# Ids and columns
# ----------------------------------------------------------------------------------------------------------------


def stable_id(value) -> int:
    """A process-independent 63-bit integer for an id string (Python's `hash` is salted per process).

    Example:
        >>> stable_id("demo-00001") == stable_id("demo-00001"), 0 <= stable_id("sku-7") < 2 ** 63
        (True, True)
    """
    return int.from_bytes(hashlib.blake2b(str(value).encode("utf-8"), digest_size=8).digest(), "big") >> 1


OMNI_FEATURES = Features({
    "source_type": Value("string"),
    "source_text": Value("string"),
    "source_image": Image(),
    "product_id": Value("string"),
    "image": Image(),
    "text": Value("string"),
})
"""Omni-Retrieval row columns (DESIGN.md section 3): a query has text only, a view an image only, a post both."""


def undecoded(dataset, columns) -> Dataset:
    """`dataset` (a `Dataset` or an `IterableDataset`) with its image columns among `columns` (an `Image()` or a list
    of them) cast to `decode=False`, so rows move PNG bytes / paths without decoding and re-encoding them. Columns
    that are absent, hold no images or are already undecoded are left alone (each cast is a pass over the data).

    Example:
        >>> columns = Features({"image": Image(), "views": List(Image()), "text": Value("string")})
        >>> rows = Dataset.from_dict({"image": [None], "views": [[]], "text": ["a"]}, features=columns)
        >>> features = undecoded(rows, ["image", "views", "text", "absent"]).features
        >>> features["image"].decode, features["views"].feature.decode
        (False, False)
    """
    features = dataset.features or {}
    for column in columns:
        feature = features.get(column)
        if isinstance(feature, Image) and feature.decode:
            dataset = dataset.cast_column(column, Image(decode=False))
        elif isinstance(feature, List) and isinstance(feature.feature, Image) and feature.feature.decode:
            dataset = dataset.cast_column(column, List(Image(decode=False)))
    return dataset


# ----------------------------------------------------------------------------------------------------------------
# Row converters (from demo catalog rows: `image`, `text`, `views`, `posts`, `post_captions`, `queries`, ...)
# ----------------------------------------------------------------------------------------------------------------


def _per_split(dataset, convert):
    if isinstance(dataset, DatasetDict):
        return DatasetDict({split: convert(rows) for split, rows in dataset.items()})
    return convert(dataset)


def _require(rows: Dataset, columns: list[str], converter: str) -> None:
    missing = [column for column in columns if column not in rows.column_names]
    if missing:
        raise ValueError(f"{converter} needs demo catalog rows with column(s) {missing}; the rows have columns "
                         f"{rows.column_names}. Load your own rows with load_image_text_dataset / load_omni_dataset.")
def to_image_text_rows(dataset: Dataset | DatasetDict, include_views: bool = False) -> Dataset | DatasetDict:
    """Image-text rows (`image`, `text`, `label`, `attribute_labels`, `product_id`) from demo catalog rows.

    With `include_views`, each other view of a product becomes one more row with the product's text (rows of one
    product share `product_id`, so a collator can avoid treating them as each other's negatives).

    Example:
        >>> from commercemm_hf.data.demo_catalog import build_demo_catalog
        >>> catalog = build_demo_catalog(num_products=10, seed=0)
        >>> rows = to_image_text_rows(catalog["train"], include_views=True)
        >>> len(rows) == 3 * len(catalog["train"]), rows.column_names
        (True, ['image', 'text', 'label', 'attribute_labels', 'product_id'])
    """

    def convert(rows: Dataset) -> Dataset:
        needed = ["image", "views"] if include_views else ["image"]
        _require(rows, needed + ["text", "label", "attribute_labels", "product_id"], "to_image_text_rows")
        features = Features({
            "image": Image(), "text": Value("string"), "label": rows.features["label"],
            "attribute_labels": rows.features["attribute_labels"], "product_id": Value("string"),
        })

        def expand(batch):
            out = {name: [] for name in features}
            for i, product_id in enumerate(batch["product_id"]):
                images = [batch["image"][i]] + (list(batch["views"][i]) if include_views else [])
                for image in images:
                    out["image"].append(image)
                    out["text"].append(batch["text"][i])
                    out["label"].append(batch["label"][i])
                    out["attribute_labels"].append(batch["attribute_labels"][i])
                    out["product_id"].append(product_id)
            return out

        return undecoded(rows, needed).map(expand, batched=True, remove_columns=rows.column_names,
                                           features=features, desc="image-text rows")

    return _per_split(dataset, convert)


def to_omni_rows(dataset: Dataset | DatasetDict) -> Dataset | DatasetDict:
    """Omni-Retrieval rows from demo catalog rows: one row per query, other view and tagged post of each product.

    Columns: `source_type` ("query" | "view" | "post"), `source_text` (query text or post caption, None for a
    view), `source_image` (None for a query), `product_id`, and the product's `image` and `text`.

    Example:
        >>> from commercemm_hf.data.demo_catalog import build_demo_catalog
        >>> catalog = build_demo_catalog(num_products=10, seed=0)
        >>> omni = to_omni_rows(catalog["train"])
        >>> len(omni) == 6 * len(catalog["train"])  # 3 queries + 2 views + 1 post per product
        True
        >>> row = omni[0]
        >>> row["source_type"], row["source_image"] is None
        ('query', True)
    """

    def convert(rows: Dataset) -> Dataset:
        def expand(batch):
            out = {name: [] for name in OMNI_FEATURES}

            def add(i, source_type, text, image):
                out["source_type"].append(source_type)
                out["source_text"].append(text)
                out["source_image"].append(image)
                out["product_id"].append(batch["product_id"][i])
                out["image"].append(batch["image"][i])
                out["text"].append(batch["text"][i])

            for i in range(len(batch["product_id"])):
                for query in batch["queries"][i]:
                    add(i, "query", query, None)
                for view in batch["views"][i]:
                    add(i, "view", None, view)
                for post, caption in zip(batch["posts"][i], batch["post_captions"][i]):
                    add(i, "post", caption, post)
            return out

        _require(rows, ["product_id", "image", "text", "queries", "views", "posts", "post_captions"], "to_omni_rows")
        return undecoded(rows, ["image", "views", "posts"]).map(
            expand, batched=True, remove_columns=rows.column_names, features=OMNI_FEATURES, desc="Omni rows"
        )

    return _per_split(dataset, convert)


__all__ = [
    "DIRECTIONS", "DIRECTION_OF", "Direction", "OLD_DIRECTION_NAMES", "OMNI_FEATURES", "SOURCE_EMBEDDING",
    "SOURCE_TYPES", "TASK_SOURCE_TYPE", "direction_metric", "source_type_of", "stable_id", "to_image_text_rows",
    "to_omni_rows", "undecoded", "with_old_direction_names", "without_old_direction_names",
]
