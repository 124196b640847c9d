"""The fine-tuning rows: the user's JSON Lines / CSV files (image paths relative to the file), a saved dataset, an
image folder or a Hub dataset name through `commercemm_hf.data` (bad rows skipped and counted, or an error), or the
SYNTHETIC demo catalog when no data is named; the validation hold-out, truncation, the label set and the retrieval
columns of each task."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import datasets
from datasets import DatasetDict

from ..data.schema import DIRECTIONS, TASK_SOURCE_TYPE, stable_id
from ..modeling.configuration_commercemm import PRESETS, CommerceMMConfig
from .arguments import (
    CategorizationArguments,
    DataArguments,
    ModelArguments,
    RetrievalArguments,
    parse_config_overrides,
)


logger = logging.getLogger(__name__)

#: For each retrieval task, the row columns of the source and of the target, by modality.
RETRIEVAL_FIELDS = {
    **{direction.name: (direction.source_columns, {"image": "image", "text": "text"}) for direction in DIRECTIONS},
    "image_to_text": ({"image": "image"}, {"text": "text"}),
    "text_to_image": ({"text": "text"}, {"image": "image"}),
}

SPLITS = ("train", "validation", "test")

#: `--modalities` -> what a categorization head reads (its config's `expected_modalities`)
MODALITY_INPUTS = {"both": ["image", "text"], "image": ["image"], "text": ["text"]}



# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def model_image_size(model_args: ModelArguments) -> int:
    """The image size of the model to be trained (the demo catalog is drawn at it)."""
    if model_args.model_name_or_path in PRESETS:
        vision = parse_config_overrides(model_args.config_overrides).get("vision_config", {})
        preset = CommerceMMConfig.from_preset(model_args.model_name_or_path)
        return vision.get("image_size") or preset.vision_config.image_size
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code)
    return config.vision_config.image_size


def build_demo(data_args: DataArguments, image_size: int) -> DatasetDict:
    """The SYNTHETIC demo catalog (train / validation / test products)."""
    from ..data import build_demo_catalog

    logger.warning(f"No data named: using the SYNTHETIC demo catalog ({data_args.demo_num_products} products).")
    return build_demo_catalog(num_products=data_args.demo_num_products, seed=data_args.demo_seed, image_size=image_size)


def load_splits(data_args: DataArguments, loader: Callable, **loader_kwargs) -> tuple[DatasetDict, dict]:
    """Rows of the named data (`dataset_name` and/or split files) through `loader` (`load_image_text_dataset` or
    `load_omni_dataset`), and a JSON-able report of what each source kept and skipped."""
    splits, report = {}, {}
    loader_kwargs = {"on_bad_rows": data_args.on_bad_rows, "num_proc": data_args.preprocessing_num_workers,
                     **loader_kwargs}
    if data_args.dataset_name:
        extra = {"name": data_args.dataset_config_name} if data_args.dataset_config_name else {}
        loaded, load_report = loader(data_args.dataset_name, **loader_kwargs, **extra)
        loaded = loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
        splits.update({"validation" if name in ("valid", "val", "dev") else name: rows
                       for name, rows in loaded.items()})
        report[data_args.dataset_name] = report_dict(load_report)
    for split in SPLITS:
        path = getattr(data_args, f"{split}_file")
        if path:
            rows, load_report = loader(path, split="train", **loader_kwargs)
            if not len(rows):  # an empty file: training or evaluating on it would fail far from here
                raise ValueError(f"--{split}_file {path} holds no rows.")
            splits[split] = rows
            report[path] = report_dict(load_report)
            logger.warning(str(load_report))
    if not splits:
        raise ValueError("No rows: pass --train_file / --validation_file / --test_file or --dataset_name.")
    return DatasetDict(splits), report


def report_dict(report) -> dict:
    return {"rows_read": report.num_read, "rows_kept": report.num_kept, "rows_skipped": report.num_skipped,
            "reasons": dict(report.reasons()),
            "skipped": [{"split": row.split, "index": row.index, "line": row.line, "reason": row.reason}
                        for row in report.skipped[:100]]}


def hold_out_validation(splits: DatasetDict, percentage: int, seed: int,
                        group_column: str | None = None) -> DatasetDict:
    """Split validation rows off `train` when there are none; by `group_column` (e.g. product ids) when given, so no
    group lands on both sides."""
    if "validation" in splits or "train" not in splits or percentage <= 0:
        return splits
    train = splits["train"]
    if group_column:
        # exactly `percentage` of the groups (rounded, at least one), chosen by a seeded hash of each group's value
        groups = sorted(set(train[group_column]), key=lambda value: stable_id(f"{seed}:{value}"))
        chosen = set(groups[:max(1, round(len(groups) * percentage / 100))])
        held = [value in chosen for value in train[group_column]]
        validation_rows = [i for i, flag in enumerate(held) if flag]
        train_rows = [i for i, flag in enumerate(held) if not flag]
        if not validation_rows or not train_rows:
            return splits
        parts = {"train": train.select(train_rows), "test": train.select(validation_rows)}
    else:
        parts = train.train_test_split(test_size=percentage / 100, seed=seed)
    logger.warning(f"No validation rows: holding out {len(parts['test'])} of {len(train)} training rows.")
    return DatasetDict({**splits, "train": parts["train"], "validation": parts["test"]})


def truncate_splits(splits: DatasetDict, data_args: DataArguments) -> DatasetDict:
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_predict_samples}
    return DatasetDict({name: rows.select(range(min(len(rows), limits[name]))) if limits.get(name) else rows
                        for name, rows in splits.items()})


def _is_list_feature(feature) -> bool:
    return isinstance(feature, (datasets.List, datasets.LargeList, list))


def _feature_names(feature) -> list[str] | None:
    inner = getattr(feature, "feature", feature) if _is_list_feature(feature) else feature
    return list(inner.names) if isinstance(inner, datasets.ClassLabel) else None


@dataclass
class LabelSpec:
    """The label set of a categorization run: names (`id2label` order), whether multi-label, and how a raw value of
    the label column maps to a class id."""

    names: list[str]
    multi_label: bool
    value_to_id: dict

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.names)}

    def config_overrides(self) -> dict:
        return {"id2label": self.id2label, "label2id": self.label2id,
                "problem_type": "multi_label_classification" if self.multi_label else "single_label_classification"}


def label_spec(splits: DatasetDict, multi_label: bool | None = None) -> LabelSpec:
    """The label set of the `label` column over all splits: a ClassLabel's names, else the sorted distinct values."""
    feature = next(iter(splits.values())).features["label"]
    is_list = _is_list_feature(feature)
    multi_label = is_list if multi_label is None else multi_label
    if multi_label and not is_list:
        raise ValueError("--multi_label needs a label column holding lists of labels.")
    if is_list and not multi_label:
        raise ValueError("The label column holds lists: that is multi-label (drop --multi_label False).")
    names = _feature_names(feature)
    if names is not None:
        return LabelSpec(names, multi_label, {index: index for index in range(len(names))})
    values = set()
    for rows in splits.values():
        for value in rows["label"]:
            values.update(value if is_list else [value])
    values = sorted(values, key=lambda v: (isinstance(v, str), v))
    return LabelSpec([str(value) for value in values], multi_label, {value: i for i, value in enumerate(values)})


def resolve_modalities(args: CategorizationArguments, data_args: DataArguments) -> str:
    """`--modalities`, or (auto) both unless only one of `--image_column` / `--text_column` is given."""
    if args.modalities != "auto":
        return args.modalities
    if data_args.image_column and not data_args.text_column:
        return "image"
    if data_args.text_column and not data_args.image_column:
        return "text"
    return "both"


def load_categorization_data(data_args: DataArguments, args: CategorizationArguments, image_size: int,
                             modalities: str) -> tuple[DatasetDict, dict]:
    """Rows with `label` and the `image` / `text` columns the modalities need, and the load report."""
    if data_args.uses_demo():
        catalog = build_demo(data_args, image_size)
        columns = [c for c in ("image", "text") if modalities in ("both", c)] + [args.label_column]
        splits = DatasetDict({name: rows.select_columns(columns).rename_columns(
            {args.label_column: "label"} if args.label_column != "label" else {}) for name, rows in catalog.items()})
        return splits, {"demo catalog": {name: len(rows) for name, rows in splits.items()}}
    from ..data.loading import load_image_text_dataset

    return load_splits(data_args, load_image_text_dataset,
                       image_column=(data_args.image_column or "image") if modalities != "text" else None,
                       text_column=data_args.text_columns() if modalities != "image" else None,
                       label_column=args.label_column, require_text=modalities != "image")


def load_retrieval_data(data_args: DataArguments, args: RetrievalArguments,
                        image_size: int) -> tuple[DatasetDict, dict]:
    """Rows for one retrieval task, with canonical columns: `source_text` / `source_image` (Omni-style tasks),
    `product_id`, and the product's `image` / `text`. On the demo catalog: queries (query_to_product), other
    views (image_to_product), tagged posts with captions (product_to_product), and the products' own images and
    texts (image_to_text, text_to_image; other views add training rows)."""
    from ..data.loading import load_image_text_dataset, load_omni_dataset
    from ..data.schema import to_image_text_rows, to_omni_rows

    source_type = TASK_SOURCE_TYPE.get(args.task)
    if data_args.uses_demo():
        catalog = build_demo(data_args, image_size)
        if source_type is None:
            splits = DatasetDict({name: to_image_text_rows(rows, include_views=name == "train").select_columns(
                ["image", "text", "product_id"]) for name, rows in catalog.items()})
        else:
            splits = to_omni_rows(catalog)
        report = {"demo catalog": {name: len(rows) for name, rows in catalog.items()}}
    elif source_type is None:
        splits, report = load_splits(data_args, load_image_text_dataset,
                                     image_column=data_args.image_column or "image",
                                     text_column=data_args.text_columns(),
                                     product_id_column=data_args.product_id_column)
    else:
        splits, report = load_splits(
            data_args, load_omni_dataset, source_text_column=args.query_column or "source_text",
            source_image_column=args.query_image_column or "source_image",
            product_id_column=data_args.product_id_column or "product_id",
            image_column=data_args.image_column or "image",
            text_column=data_args.text_columns())
    if source_type is not None:  # keep the rows of this task's source type
        kept = DatasetDict()
        for name, rows in splits.items():
            kept[name] = rows.filter(lambda value: value == source_type, input_columns="source_type")
            if len(kept[name]) < len(rows):
                logger.warning(f"{name}: kept the {len(kept[name])} {source_type} rows of {len(rows)} for {args.task}.")
            if not len(kept[name]):
                raise ValueError(f"The {name} rows hold no {source_type} sources for {args.task}: "
                                 f"{_source_help(args.task)}")
        splits = kept
    elif any("product_id" not in rows.column_names for rows in splits.values()):
        # without product ids, rows with one text are one item (not each other's negatives)
        splits = DatasetDict({name: rows if "product_id" in rows.column_names
                              else rows.add_column("product_id", rows["text"])
                              for name, rows in splits.items()})
    return splits, report


def _source_help(task: str) -> str:
    return {"query_to_product": "name the query text column with --query_column",
            "image_to_product": "name the other-view image column with --query_image_column",
            "product_to_product": "name the source image and caption columns with --query_image_column and "
                                  "--query_column"}[task]


def training_texts(splits: DatasetDict) -> list[str]:
    """Texts of the training rows (product texts and source texts) to train a tokenizer on."""
    rows = splits["train"] if "train" in splits else next(iter(splits.values()))
    texts = []
    for column in ("text", "source_text"):
        if column in rows.column_names:
            texts += [text for text in rows[column] if text]
    return texts
