"""Fine-tuning CommerceMM with transformers' `Trainer`: what `examples/run_*.py` share.

The example scripts (`examples/run_categorization.py`, `examples/run_retrieval.py`, `examples/run_pretraining.py`)
follow transformers' `examples/pytorch` scripts: `HfArgumentParser` dataclasses (these below plus every
`TrainingArguments` flag), `datasets` loading, `Trainer`, automatic resume from the last checkpoint, and
`all_results.json` / `eval_results.json` / `test_results.json` written with `Trainer.save_metrics`. This module
holds everything that is not a few lines of glue:

* argument dataclasses (`ModelArguments`, `DataArguments`, `CategorizationArguments`, `RetrievalArguments`,
  `PretrainingArguments`) and `parse_arguments` (a JSON file or the command line; with none of `--do_train`,
  `--do_eval`, `--do_predict` the script trains, evaluates, and tests when there is a test split);
* data: the user's JSON Lines / CSV files (image paths relative to the file), a saved dataset, an image folder or a
  Hub dataset name through `commercemm_hf.data` (bad rows skipped and counted, or an error), or the SYNTHETIC demo
  catalog when no data is named;
* the model and processor: a CommerceMM folder or Hub id (`from_pretrained`; a pretraining folder's encoders load
  into a head), or a preset name (`tiny`, `small`, `base`) started from scratch with a BPE tokenizer trained on the
  training texts;
* collators for `CommerceMMForProductCategorization` and `CommerceMMForRetrieval`, categorization
  `compute_metrics` (accuracy, macro-F1; micro-F1 for multi-label, through `evaluate`), and
  `CommerceMMRetrievalTrainer`, whose `evaluate` ranks *every distinct product of the split* for each source
  (Recall@1/5/10, MRR, nDCG@10 with pessimistic ties), also under `torchrun` / `accelerate launch`;
* `run_training`: last-checkpoint detection, train / evaluate / test, metrics files, and the Hub-ready folder
  (`commercemm_hf.hub.save_hub_folder`) in `output_dir`, loadable with `pipeline(...)`.

Example:
    >>> # python examples/run_categorization.py --output_dir outputs/categorization     (the demo catalog)
    >>> # from transformers import pipeline
    >>> # pipeline("product-categorization", model="outputs/categorization", trust_remote_code=True)("red mug")
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
import transformers
from datasets import Dataset, DatasetDict
from transformers import HfArgumentParser, Trainer, TrainerState, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ..data.schema import DIRECTIONS, TASK_SOURCE_TYPE, stable_id
from ..modeling.configuration_commercemm import PRESETS, CommerceMMConfig
from ..modeling.modeling_commercemm_tasks import RETRIEVAL_TASKS
from .checkpoints import DEFAULT_SAVE_TOTAL_LIMIT, CheckpointSizeCallback, finished_run
from .disk_space import disk_full_named


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
# Arguments
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    """Which model to start from."""

    model_name_or_path: str = field(default="tiny", metadata={
        "help": "A CommerceMM folder or Hub id (a pretraining folder's encoders load into the head), or a preset "
                f"name ({', '.join(PRESETS)}) to start from scratch."})
    tokenizer_name: str | None = field(default=None, metadata={
        "help": "From scratch only: a tokenizer folder or Hub id (default: a byte-level BPE trained on the training "
                "texts)."})
    text_backbone: str | None = field(default=None, metadata={
        "help": "From a preset only: a BERT / RoBERTa / XLM-R folder or Hub id whose weights start the text tower and "
                "whose tokenizer the processor uses ('minilm': the offline all-MiniLM-L6-v2 of the minilm extra, the "
                "shape of the small preset)."})
    vision_backbone: str | None = field(default=None, metadata={
        "help": "From a preset only: a ViT or CLIP folder or Hub id whose weights start the image tower."})
    vocab_size: int = field(default=4000, metadata={"help": "Size of the BPE vocabulary trained from scratch."})
    max_seq_length: int = field(default=64, metadata={"help": "Texts are truncated to this many tokens."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Allow remote code when loading a Hub id (not needed for CommerceMM with commercemm_hf installed)."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Start over even when output_dir holds checkpoints (default: resume from the last one)."})


@dataclass
class DataArguments:
    """Where the rows come from. Without any of `dataset_name` / `train_file` / `validation_file` / `test_file`, the
    SYNTHETIC demo catalog is built."""

    dataset_name: str | None = field(default=None, metadata={
        "help": "A Hub dataset name, a folder written by save_to_disk, or an image folder."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_file: str | None = field(default=None, metadata={
        "help": "JSON Lines / CSV / Parquet rows; image paths are relative to the file."})
    validation_file: str | None = field(default=None, metadata={"help": "Evaluation rows (same format)."})
    test_file: str | None = field(default=None, metadata={"help": "Test rows (same format)."})
    image_column: str | None = field(default=None, metadata={"help": "Column of image paths (default: image)."})
    text_column: str | None = field(default=None, metadata={
        "help": "Column of texts (default: text); several columns comma-separated (e.g. title,description) are "
                "joined."})
    product_id_column: str | None = field(default=None, metadata={
        "help": "Column of product ids (retrieval: default product_id for Omni-style tasks; rows with one id are "
                "one product)."})
    on_bad_rows: str = field(default="skip", metadata={
        "help": "skip (warn and count, see data_report.json) or raise on rows with an unreadable image or an empty "
                "text.", "choices": ["skip", "raise"]})
    validation_split_percentage: int = field(default=10, metadata={
        "help": "Without validation rows: the share of the training rows (of products, for retrieval) held out."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training rows (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the validation rows."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Truncate the test rows."})
    demo_num_products: int = field(default=400, metadata={"help": "Size of the demo catalog (when no data is named)."})
    demo_seed: int = field(default=0, metadata={"help": "Seed of the demo catalog."})
    preprocessing_num_workers: int | None = field(default=None, metadata={
        "help": "Processes checking the rows (datasets.map num_proc); the check is cached and runs once."})
    # training images only, in the collator (commercemm_hf/training/augmentation.py); evaluation sees them as they are
    augment: bool = field(default=False, metadata={
        "help": "Augment training images: random resized crop, horizontal flip, colour jitter."})
    augment_scale_min: float = field(default=0.5, metadata={"help": "Smallest crop area share (--augment)."})
    augment_flip: float = field(default=0.5, metadata={"help": "Horizontal flip probability (--augment)."})
    augment_jitter: float = field(default=0.4, metadata={
        "help": "Brightness / contrast / saturation jitter strength (--augment)."})

    def augmentation(self, seed: int | None = 0):
        """The `--augment*` flags as an `ImageAugmentation`, or None when off."""
        from .augmentation import augmentation_from_flags

        return augmentation_from_flags(self.augment, self.augment_scale_min, self.augment_flip, self.augment_jitter,
                                       seed)

    def uses_demo(self) -> bool:
        return not any((self.dataset_name, self.train_file, self.validation_file, self.test_file))

    def text_columns(self, default: str | None = "text") -> list[str] | None:
        value = self.text_column or default
        return [part.strip() for part in value.split(",")] if value else None


@dataclass
class CategorizationArguments:
    label_column: str = field(default="label", metadata={
        "help": "Column of labels: a class (string or int) per row, or a list of labels per row (multi-label; on "
                "the demo catalog: attributes)."})
    modalities: str = field(default="auto", metadata={
        "help": "What the classifier reads: both, text or image (auto: both, or the one whose column is given).",
        "choices": ["auto", "both", "text", "image"]})
    multi_label: bool | None = field(default=None, metadata={
        "help": "Force multi-label (default: when the label column holds lists)."})
    multi_label_threshold: float = field(default=0.5, metadata={"help": "Sigmoid score above which a label is on."})


@dataclass
class RetrievalArguments:
    task: str = field(default="query_to_product", metadata={
        "help": "Which direction to fine-tune and evaluate.", "choices": list(RETRIEVAL_TASKS)})
    query_column: str | None = field(default=None, metadata={
        "help": "Column of source texts: search queries (query_to_product) or post captions (product_to_product). "
                "Default: source_text."})
    query_image_column: str | None = field(default=None, metadata={
        "help": "Column of source image paths: other views (image_to_product) or tagged posts (product_to_product). "
                "Default: source_image."})


@dataclass
class PretrainingArguments:
    omni_file: str | None = field(default=None, metadata={
        "help": "Omni rows (source_type, source_text, source_image, product_id, image, text) for the second stream; "
                "--train_file then holds the image-text rows."})
    validation_omni_file: str | None = field(default=None, metadata={"help": "Omni rows to evaluate on."})
    tasks: str | None = field(default=None, metadata={"help": "Comma-separated subset of the 14 tasks (default: all)."})
    omni_batch_size: int | None = field(default=None, metadata={
        "help": "Omni rows per device per step (default: per_device_train_batch_size)."})
    modality_randomization: bool | None = field(default=None, metadata={
        "help": "Sample active depths per step (default: the config's setting)."})


def parse_arguments(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse `dataclass_types` (the last one `TrainingArguments`) from a single `.json` file argument or the command
    line, the way transformers' example scripts do. With none of `--do_train/--do_eval/--do_predict`, the run
    trains and evaluates (and tests, when test rows exist: see `run_training`)."""
    parser = HfArgumentParser(tuple(dataclass_types))
    argv = list(sys.argv[1:] if argv is None else argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # several processes without GPUs (torchrun / accelerate launch on CPU): DDP over gloo, not one run per process
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    if len(argv) == 1 and argv[0].endswith(".json"):
        import json

        json_file = os.path.abspath(argv[0])
        parsed = parser.parse_json_file(json_file=json_file)
        with open(json_file) as handle:
            given = set(json.load(handle))
    else:
        parsed = parser.parse_args_into_dataclasses(args=argv)
        given = {arg[2:].split("=")[0].replace("-", "_") for arg in argv if arg.startswith("--")}
    training_args = parsed[-1]
    if not isinstance(training_args, TrainingArguments):
        raise TypeError("The last dataclass must be TrainingArguments.")
    if "save_total_limit" not in given and training_args.save_total_limit is None:
        # TrainingArguments keeps every checkpoint (weights + optimizer state, ~4x the model each); the user's
        # --save_total_limit always wins
        training_args.save_total_limit = DEFAULT_SAVE_TOTAL_LIMIT
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        training_args.do_train = training_args.do_eval = True
        training_args.do_predict = None  # "when test rows exist"
    return parsed


def start(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """What every example script does first: `parse_arguments`, `setup_logging`, `set_seed`."""
    from transformers import set_seed

    parsed = parse_arguments(dataclass_types, argv)
    setup_logging(parsed[-1])
    set_seed(parsed[-1].seed)
    return parsed


def load_data(training_args: TrainingArguments, load: Callable[[], tuple]):
    """Run `load()` (returning the rows and a load report) on the main process first (the others then read the
    `datasets` cache), write the report to `data_report.json`, and return the rows."""
    with training_args.main_process_first(desc="loading the rows"):
        *rows, report = load()
    save_json(training_args, "data_report.json", report)
    return rows[0] if len(rows) == 1 else tuple(rows)


def setup_logging(training_args: TrainingArguments) -> None:
    """transformers' example-script logging: INFO on the main process, warnings elsewhere."""
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    for name in (__name__, "__main__", CheckpointSizeCallback.__module__):
        logging.getLogger(name).setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.warning(f"Process rank: {training_args.process_index} of {training_args.world_size}, "
                   f"device: {training_args.device}")


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def model_image_size(model_args: ModelArguments) -> int:
    """The image size of the model to be trained (the demo catalog is drawn at it)."""
    if model_args.model_name_or_path in PRESETS:
        return CommerceMMConfig.from_preset(model_args.model_name_or_path).vision_config.image_size
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
        splits.update({"validation" if name in ("valid", "val", "dev") else name: rows for name, rows in loaded.items()})
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


def hold_out_validation(splits: DatasetDict, percentage: int, seed: int, group_column: str | None = None) -> DatasetDict:
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


def load_retrieval_data(data_args: DataArguments, args: RetrievalArguments, image_size: int) -> tuple[DatasetDict, dict]:
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
        splits, report = load_splits(data_args, load_image_text_dataset, image_column=data_args.image_column or "image",
                                     text_column=data_args.text_columns(), product_id_column=data_args.product_id_column)
    else:
        splits, report = load_splits(
            data_args, load_omni_dataset, source_text_column=args.query_column or "source_text",
            source_image_column=args.query_image_column or "source_image",
            product_id_column=data_args.product_id_column or "product_id", image_column=data_args.image_column or "image",
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
        splits = DatasetDict({name: rows if "product_id" in rows.column_names else rows.add_column("product_id", rows["text"])
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


# ----------------------------------------------------------------------------------------------------------------
# Model and processor
# ----------------------------------------------------------------------------------------------------------------


def load_model_and_processor(model_args: ModelArguments, model_class, texts: Callable[[], list[str]] | None = None,
                             config_transform: Callable | None = None, **config_overrides):
    """`(model, processor)` for the example scripts' `ModelArguments`, through `create_model_and_processor`: from a
    preset (tokenizer from `tokenizer_name` or trained on `texts()`), or from a folder / Hub id with its processor
    (`config_overrides` update the loaded config)."""
    from ..factory import create_model_and_processor

    scratch = model_args.model_name_or_path in PRESETS
    return create_model_and_processor(
        model_args.model_name_or_path, model_class, texts=texts if scratch else None,
        tokenizer=model_args.tokenizer_name, text_backbone=model_args.text_backbone,
        vision_backbone=model_args.vision_backbone, vocab_size=model_args.vocab_size,
        max_seq_length=model_args.max_seq_length, trust_remote_code=model_args.trust_remote_code,
        config_transform=config_transform, **config_overrides)


# ----------------------------------------------------------------------------------------------------------------
# Collators and metrics
# ----------------------------------------------------------------------------------------------------------------


def _encode(processor, images, texts, max_length: int, prefix: str = "") -> dict[str, torch.Tensor]:
    encoded = dict(processor(images=images, text=texts, padding=True, truncation=True, max_length=max_length,
                             return_tensors="pt"))
    encoded.pop("token_type_ids", None)
    return {prefix + key: value for key, value in encoded.items()}


class CategorizationCollator:
    """Rows (`image` and/or `text`, `label`) -> `pixel_values` / `input_ids` / `attention_mask` / `labels` (class ids,
    or multi-hot floats for multi-label) for `CommerceMMForProductCategorization`."""

    def __init__(self, processor, labels: LabelSpec, modalities: str = "both", max_length: int = 64, augment=None):
        if modalities not in ("both", "text", "image"):
            raise ValueError(f"modalities must be both, text or image, got {modalities!r}.")
        self.processor, self.labels, self.modalities, self.max_length = processor, labels, modalities, max_length
        self.augment = augment  # an ImageAugmentation for training batches (see for_evaluation)

    def for_evaluation(self) -> CategorizationCollator:
        return CategorizationCollator(self.processor, self.labels, self.modalities, self.max_length)

    def _label_ids(self, value) -> list[int]:
        values = value if self.labels.multi_label else [value]
        try:
            return [self.labels.value_to_id[item] for item in values]
        except KeyError as error:
            raise ValueError(f"Label {error.args[0]!r} is not in the label set {self.labels.names[:20]}...") from None

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        images = [row["image"] for row in rows] if self.modalities != "text" else None
        texts = [row["text"] for row in rows] if self.modalities != "image" else None
        images = self.augment.images(images) if self.augment is not None else images
        batch = _encode(self.processor, images, texts, self.max_length)
        ids = [self._label_ids(row["label"]) for row in rows]
        if self.labels.multi_label:
            labels = torch.zeros(len(rows), len(self.labels.names))
            for row, row_ids in enumerate(ids):
                labels[row, row_ids] = 1.0
            batch["labels"] = labels
        else:
            batch["labels"] = torch.tensor([row_ids[0] for row_ids in ids])
        return batch


def categorization_compute_metrics(multi_label: bool, threshold: float = 0.5) -> Callable:
    """`compute_metrics` for `Trainer`: accuracy and macro-F1 (and micro-F1 for multi-label) of the predictions,
    through `commercemm_hf.evaluation.metrics` (offline `evaluate` modules)."""
    from ..evaluation.metrics import categorization_metrics

    def compute_metrics(prediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        if multi_label:
            predicted = (1.0 / (1.0 + np.exp(-logits)) > threshold).astype(np.int64)
            return categorization_metrics(predicted, np.asarray(prediction.label_ids).round().astype(np.int64),
                                          multi_label=True)
        return categorization_metrics(logits.argmax(-1), prediction.label_ids)

    return compute_metrics


class RetrievalCollator:
    """Rows -> a `CommerceMMForRetrieval` batch for one task: the source (`source_input_ids` /
    `source_attention_mask` / `source_pixel_values`), the target (`input_ids` / `attention_mask` / `pixel_values`)
    and `target_index` (rows of one product are not each other's negatives). `parts=("source",)` or
    `("target",)` encodes one side only (to embed it, without a loss)."""

    def __init__(self, processor, task: str, max_length: int = 64, parts: tuple[str, ...] = ("source", "target"),
                 augment=None):
        if task not in RETRIEVAL_FIELDS:
            raise ValueError(f"Unknown retrieval task {task!r}; choose one of {list(RETRIEVAL_FIELDS)}.")
        self.processor, self.task, self.max_length, self.parts = processor, task, max_length, parts
        self.augment = augment  # an ImageAugmentation for training batches; `only` and for_evaluation drop it

    def only(self, part: str) -> RetrievalCollator:
        return RetrievalCollator(self.processor, self.task, self.max_length, (part,))

    def for_evaluation(self) -> RetrievalCollator:
        return RetrievalCollator(self.processor, self.task, self.max_length, self.parts)

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        source_fields, target_fields = RETRIEVAL_FIELDS[self.task]
        batch = {}
        for part, fields, prefix in (("source", source_fields, "source_"), ("target", target_fields, "")):
            if part not in self.parts:
                continue
            values = {modality: [row[column] for row in rows] for modality, column in fields.items()}
            for modality, items in values.items():
                missing = [i for i, item in enumerate(items) if item is None or (modality == "text" and not item.strip())]
                if missing:
                    raise ValueError(f"{self.task}: batch rows {missing} have no {part} {modality} "
                                     f"({fields[modality]!r} column).")
            if self.augment is not None and "image" in values:
                values["image"] = self.augment.images(values["image"])
            batch.update(_encode(self.processor, values.get("image"), values.get("text"), self.max_length, prefix))
        if len(self.parts) == 2:
            batch["target_index"] = torch.tensor([stable_id(row["product_id"]) for row in rows])
        else:
            batch["return_loss"] = False
        return batch


class _HeadTrainerMixin:
    """What the fine-tuning trainers set up: raw columns reach the collators, the heads' losses are per-batch means
    (`num_items_in_batch` is not theirs to use), and layers a modality does not reach get no gradient under DDP."""

    def _setup_head_training(self, args: TrainingArguments):
        args.remove_unused_columns = False
        if not torch.cuda.is_available():
            args.dataloader_pin_memory = False  # nothing to pin to
        if args.ddp_find_unused_parameters is None:
            args.ddp_find_unused_parameters = True

    def _after_init(self):
        self.model_accepts_loss_kwargs = False

    def _get_dataloader(self, dataset, description, *args, **kwargs):
        # evaluation and test batches are built without the collator's training-time augmentation
        collator = self.data_collator
        if description != "Training" and hasattr(collator, "for_evaluation"):
            self.data_collator = collator.for_evaluation()
        try:
            return super()._get_dataloader(dataset, description, *args, **kwargs)
        finally:
            self.data_collator = collator

    def _save_checkpoint(self, model, trial):
        with disk_full_named(self._get_output_dir(trial=trial)):  # not torch's "inline_container.cc" message
            super()._save_checkpoint(model, trial)


class CommerceMMCategorizationTrainer(_HeadTrainerMixin, Trainer):
    """`Trainer` for `CommerceMMForProductCategorization` (see `_HeadTrainerMixin`)."""

    def __init__(self, *args, **kwargs):
        self._setup_head_training(kwargs.get("args"))
        super().__init__(*args, **kwargs)
        self._after_init()


class CommerceMMRetrievalTrainer(_HeadTrainerMixin, Trainer):
    """`Trainer` for `CommerceMMForRetrieval` whose `evaluate` ranks every distinct product of the split.

    Each evaluation row is a source whose gold item is its `product_id`; candidates are the split's distinct
    products (first row of each id). Sources and candidates are embedded in batches spread over the processes
    (gathered with `Trainer.evaluation_loop`), and `retrieval_metrics` gives Recall@1/5/10, MRR and nDCG@10 with
    pessimistic ties, plus `num_queries` and `num_products`.
    """

    def __init__(self, *args, **kwargs):
        self._setup_head_training(kwargs.get("args"))
        super().__init__(*args, **kwargs)
        self._after_init()

    def _embed(self, rows: Dataset, part: str, metric_key_prefix: str) -> torch.Tensor:
        collator = self.data_collator
        self.data_collator = collator.only(part)
        try:
            output = self.evaluation_loop(self.get_eval_dataloader(rows), description=f"Embedding {part}s",
                                          prediction_loss_only=False, metric_key_prefix=metric_key_prefix)
        finally:
            self.data_collator = collator
        return torch.as_tensor(np.asarray(output.predictions), dtype=torch.float32)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        import time

        from ..evaluation.retrieval import distinct_products, embedding_retrieval_metrics

        rows = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(rows, dict):
            return {key: value for name, part in rows.items()
                    for key, value in self.evaluate(part, ignore_keys, f"{metric_key_prefix}_{name}").items()}
        started = time.time()
        product_rows, gold = distinct_products(rows["product_id"])
        sources = self._embed(rows, "source", metric_key_prefix)
        products = self._embed(rows.select(product_rows), "target", metric_key_prefix)
        if sources.shape[0] != len(rows) or products.shape[0] != len(product_rows):
            raise RuntimeError(f"Gathered {sources.shape[0]} source and {products.shape[0]} product embeddings for "
                               f"{len(rows)} sources and {len(product_rows)} products.")
        metrics = embedding_retrieval_metrics(sources, products, gold, ks=(1, 5, 10))
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in metrics.items()}
        metrics[f"{metric_key_prefix}_num_queries"] = len(rows)
        metrics[f"{metric_key_prefix}_num_products"] = len(product_rows)
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - started, 4)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------


def last_checkpoint(training_args: TrainingArguments, model_args: ModelArguments) -> str | None:
    """The checkpoint to resume from: `--resume_from_checkpoint`, else the last complete one in `output_dir` (unless
    `--overwrite_output_dir`), as transformers' example scripts detect it."""
    if training_args.resume_from_checkpoint is not None:
        return training_args.resume_from_checkpoint
    if not training_args.do_train or model_args.overwrite_output_dir or not os.path.isdir(training_args.output_dir):
        return None
    found = get_last_checkpoint(training_args.output_dir)
    if found is not None:
        logger.warning(f"Checkpoint detected, resuming training at {found}. Pass --overwrite_output_dir to train from "
                       "scratch instead.")
    return found


def save_json(training_args: TrainingArguments, name: str, value) -> None:
    import json

    if training_args.process_index == 0:
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, name), "w") as handle:
            json.dump(value, handle, indent=2, default=str)


def _read_json(training_args: TrainingArguments, name: str) -> dict:
    import json

    path = os.path.join(training_args.output_dir, name)
    if not os.path.isfile(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def run_training(trainer: Trainer, splits: DatasetDict, training_args: TrainingArguments, model_args: ModelArguments,
                 hub_model=None) -> dict[str, float]:
    """Train (resuming from the last checkpoint), evaluate on `validation`, test on `test`, write the metrics files
    (`train_results.json`, `eval_results.json`, `test_results.json`, `all_results.json`) and the Hub-ready folder
    (`hub_model`, default `trainer.model`, with the trainer's processor) into `output_dir`. Returns all metrics."""
    from ..hub import save_hub_folder

    results = {}
    if training_args.do_train:
        if "train" not in splits:
            raise ValueError("--do_train needs training rows (--train_file or a dataset with a train split).")
        checkpoint = last_checkpoint(training_args, model_args)
        finished = finished_run(checkpoint, training_args)
        if finished is not None:
            # a finished run started again: training would do nothing (train_loss 0.0) or one step past the end,
            # and overwrite the metrics and state of the run that trained; evaluate and save its weights instead
            best = finished.get("best_model_checkpoint") if training_args.load_best_model_at_end else None
            weights = best if best and os.path.isdir(best) else checkpoint
            logger.warning(f"{checkpoint} already finished this run (step {finished['global_step']} of "
                           f"{finished.get('max_steps')}): nothing to train; loading {weights} and keeping "
                           "train_results.json and trainer_state.json. Raise --max_steps / --num_train_epochs to "
                           "train further, or pass --overwrite_output_dir to start over.")
            trainer._load_from_checkpoint(weights)
            trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))  # its epoch
            results.update(_read_json(training_args, "train_results.json"))
        else:
            trainer.add_callback(CheckpointSizeCallback())
            train_result = trainer.train(resume_from_checkpoint=checkpoint)
            metrics = {**train_result.metrics, "train_samples": len(splits["train"])}
            trainer.log_metrics("train", metrics)
            trainer.save_metrics("train", metrics)
            trainer.save_state()
            results.update(metrics)
    for split, wanted, prefix in (("validation", training_args.do_eval, "eval"),
                                  ("test", training_args.do_predict, "test")):
        if wanted is None and split not in splits:
            continue
        if split not in splits:
            raise ValueError(f"--do_{'eval' if prefix == 'eval' else 'predict'} needs {split} rows.")
        if wanted or wanted is None:
            metrics = trainer.evaluate(splits[split], metric_key_prefix=prefix)
            metrics[f"{prefix}_samples"] = len(splits[split])
            trainer.log_metrics(prefix, metrics)
            trainer.save_metrics(prefix, metrics)
            results.update(metrics)
    if trainer.is_world_process_zero():
        folder = save_hub_folder(hub_model if hub_model is not None else trainer.model, trainer.processing_class,
                                 training_args.output_dir)
        logger.warning(f"Saved the Hub-ready model folder {folder}.")
    # every process waits for rank 0's save, then leaves the process group: a torchrun process that exits with gloo
    # threads still running can abort ("terminate called without an active exception", exit code -6)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return results


def select_splits(splits: DatasetDict, data_args: DataArguments, training_args: TrainingArguments,
                  group_column: str | None = None) -> DatasetDict:
    """Hold out validation rows when needed, and apply `--max_*_samples`."""
    if training_args.do_eval:
        splits = hold_out_validation(splits, data_args.validation_split_percentage, training_args.seed, group_column)
    return truncate_splits(splits, data_args)


__all__ = [
    "CategorizationArguments", "CategorizationCollator", "CommerceMMCategorizationTrainer", "MODALITY_INPUTS",
    "CommerceMMRetrievalTrainer", "DataArguments", "LabelSpec", "ModelArguments", "PretrainingArguments",
    "RETRIEVAL_FIELDS", "RetrievalArguments", "RetrievalCollator", "TASK_SOURCE_TYPE", "build_demo",
    "categorization_compute_metrics", "label_spec", "last_checkpoint", "load_categorization_data", "load_data",
    "load_model_and_processor", "load_retrieval_data", "load_splits", "model_image_size", "parse_arguments",
    "report_dict", "resolve_modalities", "run_training", "save_json", "select_splits", "setup_logging", "start",
    "training_texts", "truncate_splits",
]
