"""The 7 downstream tasks of CommerceMM, measured on one split, with or without fine-tuned heads.

| # | task | input -> output | metrics |
|---|---|---|---|
| 1 | `categorization` | product image + text -> one class | accuracy, macro-F1 |
| 2 | `attributes` | product image + text -> a set of attribute labels | exact-match accuracy, macro-/micro-F1 |
| 3 | `image_to_text` | product image -> its text among all products' texts | Recall@1/5/10, MRR, nDCG@10 |
| 4 | `text_to_image` | product text -> its image | same |
| 5 | `query_to_product` | search query (text) -> product (multimodal) | same |
| 6 | `image_to_product` | another view (image) -> product (multimodal) | same |
| 7 | `product_to_product` | tagged post (image + caption) -> product (multimodal) | same |

Tasks 1 and 2 use a fine-tuned `CommerceMMForProductCategorization` when one is given; without one they run
zero-shot, like CLIP: each label's name is embedded as a text query and a product takes the label whose query its
multimodal embedding matches best (for attributes named `group:value`, such as the demo's `colour:red`, one value
per group; otherwise the single best label). Tasks 3-7 use the embeddings of `model` (a pretrained or a
retrieval-fine-tuned `CommerceMMModel`). Retrieval runs over every distinct product of the split, with pessimistic
tie-breaking. Tasks 5-7 carry the names of the fine-tuning tasks (`examples/run_retrieval.py --task`); the metrics
are also written under their old names (`view_to_product_*`, `post_to_product_*`), and the table shows both.

Example:
    >>> from commercemm_hf import CommerceMMModel
    >>> from commercemm_hf.data.schema import to_image_text_rows, to_omni_rows, without_old_direction_names
    >>> from commercemm_hf.training.recipes import prepare_demo
    >>> demo = prepare_demo(num_products=30, vocab_size=300)
    >>> model = CommerceMMModel(demo.config)
    >>> split = demo.catalog["validation"]
    >>> metrics = evaluate_downstream(model, demo.processor, to_image_text_rows(split), to_omni_rows(split))
    >>> sorted({name.split("_recall")[0] for name in without_old_direction_names(metrics) if "recall@1" in name})
    ['image_to_product', 'image_to_text', 'product_to_product', 'query_to_product', 'text_to_image']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.schema import DIRECTIONS
from .metrics import categorization_metrics
from .zero_shot import embed, image_text_retrieval_metrics, omni_retrieval_metrics, processed_batches


DOWNSTREAM_TASKS = ("categorization", "attributes", "image_to_text", "text_to_image",
                    *(direction.name for direction in DIRECTIONS))

# direction name -> "name/old name" for the table rows, so a reader of either name finds the row
_ROW_NAME = {direction.name: f"{direction.name}/{direction.old_name}" for direction in DIRECTIONS if direction.old_name}


def _label_names(dataset, column: str) -> list[str] | None:
    """The class names of a ClassLabel column (or a list of ClassLabel), else None."""
    feature = dataset.features.get(column)
    feature = getattr(feature, "feature", feature)  # List(ClassLabel) -> ClassLabel
    return list(feature.names) if hasattr(feature, "names") else None


def _as_names(values, names: list[str] | None) -> list:
    """Column values as label names (ints are indices into `names` when there are names)."""
    if names is None:
        return [str(value) for value in values]
    return [names[value] if isinstance(value, (int, np.integer)) else str(value) for value in values]


@torch.no_grad()
def _head_logits(head, processor, images: Sequence, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    head.eval()
    return torch.cat([head(**inputs).logits.float().cpu()
                      for inputs in processed_batches(head, processor, images, texts, batch_size)])


def _label_prompt(name: str) -> str:
    # "colour:red" -> "red": the value is what a shopper would type
    return name.split(":", 1)[1] if ":" in name else name


def _zero_shot_scores(model, processor, product_embeds: torch.Tensor, names: list[str],
                      batch_size: int) -> torch.Tensor:
    label_embeds = embed(model, processor, None, [_label_prompt(name) for name in names], "text", batch_size)
    return product_embeds @ label_embeds.t()


def _head_names(head) -> list[str]:
    return [head.config.id2label[index] for index in range(head.config.num_labels)]


def _check_known(references: list, known: list[str], task: str) -> None:
    unknown = sorted(set(references) - set(known))
    if unknown:
        raise ValueError(f"{task}: the split has labels the model does not know: {unknown[:5]} "
                         f"(known: {known[:10]}{' ...' if len(known) > 10 else ''}).")


def categorization_scores(model, processor, rows, label_column: str = "label", head=None, batch_size: int = 32,
                          product_embeds: torch.Tensor | None = None) -> dict[str, float]:
    """Task 1: accuracy and macro-F1 of one class per product, from `head` or zero-shot from label names."""
    references = _as_names(rows[label_column], _label_names(rows, label_column))
    if head is not None:
        names = _head_names(head)
        scores = _head_logits(head, processor, rows["image"], rows["text"], batch_size)
    else:
        names = _label_names(rows, label_column) or sorted(set(references))
        scores = _zero_shot_scores(model, processor, product_embeds, names, batch_size)
    _check_known(references, names, "categorization")
    position = {name: index for index, name in enumerate(names)}
    return categorization_metrics(scores.argmax(dim=1).tolist(), [position[name] for name in references])


def attribute_scores(model, processor, rows, attribute_column: str = "attribute_labels", head=None,
                     batch_size: int = 32, product_embeds: torch.Tensor | None = None) -> dict[str, float]:
    """Task 2: exact-match accuracy, macro- and micro-F1 of each product's attribute set, from a multi-label `head`
    (sigmoid > 0.5) or zero-shot from attribute names."""
    column_names = _label_names(rows, attribute_column)
    references = [_as_names(values, column_names) for values in rows[attribute_column]]
    if head is not None:
        names = _head_names(head)
        predicted = _head_logits(head, processor, rows["image"], rows["text"], batch_size).sigmoid() > 0.5
    else:
        names = column_names or sorted({name for values in references for name in values})
        scores = _zero_shot_scores(model, processor, product_embeds, names, batch_size)
        groups = [name.split(":", 1)[0] if ":" in name else "" for name in names]
        predicted = torch.zeros_like(scores, dtype=torch.bool)
        for group in sorted(set(groups)):
            members = torch.tensor([index for index, value in enumerate(groups) if value == group])
            best = members[scores[:, members].argmax(dim=1)]
            predicted[torch.arange(len(scores)), best] = True
    _check_known([name for values in references for name in values], names, "attributes")
    position = {name: index for index, name in enumerate(names)}
    truth = np.zeros((len(references), len(names)), dtype=np.int8)
    for row, values in enumerate(references):
        truth[row, [position[name] for name in values]] = 1
    return categorization_metrics(predicted.numpy().astype(np.int8), truth, multi_label=True)


def evaluate_downstream(model, processor, image_text_rows, omni_rows=None, categorization_head=None,
                        attribute_head=None, label_column: str | None = "label",
                        attribute_column: str | None = "attribute_labels", batch_size: int = 32,
                        **depths) -> dict[str, float]:
    """Metrics of the 7 downstream tasks (those the data allows) as one flat dict, `<task>_<metric>`.

    `image_text_rows`: one row per product (`image`, `text`, and the label / attribute columns when tasks 1-2 are
    wanted; a column that is missing or None skips its task). `omni_rows`: queries, other views and tagged posts
    (see `load_omni_dataset`); None skips tasks 5-7. `categorization_head` / `attribute_head`: fine-tuned
    `CommerceMMForProductCategorization` models (multi-class / multi-label), else zero-shot. `depths`:
    `text_depth`, `image_depth`, `multimodal_depth` for the embedding tasks.
    """
    if len(image_text_rows) == 0:
        raise ValueError("The evaluation split has no image-text rows.")
    metrics = {}
    columns = image_text_rows.column_names
    zero_shot = ((label_column in columns and categorization_head is None)
                 or (attribute_column in columns and attribute_head is None))
    product_embeds = (embed(model, processor, image_text_rows["image"], image_text_rows["text"], "multimodal",
                            batch_size, **depths) if zero_shot else None)
    if label_column and label_column in columns:
        metrics.update({f"categorization_{name}": value for name, value in categorization_scores(
            model, processor, image_text_rows, label_column, categorization_head, batch_size, product_embeds).items()})
    if attribute_column and attribute_column in columns:
        metrics.update({f"attributes_{name}": value for name, value in attribute_scores(
            model, processor, image_text_rows, attribute_column, attribute_head, batch_size, product_embeds).items()})
    metrics.update(image_text_retrieval_metrics(model, processor, image_text_rows, batch_size, **depths))
    if omni_rows is not None and len(omni_rows):
        metrics.update(omni_retrieval_metrics(model, processor, omni_rows, batch_size, **depths))
    return metrics


def downstream_table(results: dict[str, dict[str, float]]) -> str:
    """A text table: one row per downstream task and headline metric, one column per entry of `results`
    (e.g. {"not fine-tuned": ..., "fine-tuned": ...})."""
    headline = {"categorization": ("accuracy", "macro_f1"), "attributes": ("accuracy", "macro_f1")}
    rows = []
    for task in DOWNSTREAM_TASKS:
        for metric in headline.get(task, ("recall@1", "recall@10", "mrr")):
            key = f"{task}_{metric}"
            if any(key in values for values in results.values()):
                rows.append((f"{_ROW_NAME.get(task, task)} {metric}",
                             [values.get(key, float("nan")) for values in results.values()]))
    width = max([len(name) for name, _ in rows] + [20])
    lines = [f"{'task metric':{width}s}" + "".join(f"{column:>16s}" for column in results),
             "-" * (width + 16 * len(results))]
    lines += [f"{name:{width}s}" + "".join(f"{value:16.3f}" for value in values) for name, values in rows]
    return "\n".join(lines)


__all__ = ["DOWNSTREAM_TASKS", "attribute_scores", "categorization_scores", "downstream_table", "evaluate_downstream"]
