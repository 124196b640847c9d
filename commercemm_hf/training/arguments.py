"""The example scripts' argument dataclasses (`ModelArguments`, `DataArguments`, `CategorizationArguments`,
`RetrievalArguments`, `PretrainingArguments`; every `TrainingArguments` flag besides) and `parse_arguments` /
`start`: a JSON file or the command line; with none of `--do_train`, `--do_eval`, `--do_predict` the script trains,
evaluates, and tests when there is a test split."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import datasets
import torch
import transformers
from transformers import HfArgumentParser, TrainingArguments

from ..modeling.configuration_commercemm import PRESETS
from ..modeling.modeling_commercemm_tasks import RETRIEVAL_TASKS
from .checkpoints import DEFAULT_SAVE_TOTAL_LIMIT, CheckpointSizeCallback


logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------


def parse_config_overrides(text: str | None) -> dict:
    """`--config_overrides` as `create_model_and_processor` overrides: `key=value` items split on the commas outside
    brackets, values read as JSON (else kept as text), `sub_config.key` into that sub-config's dict.

    Example:
        >>> parse_config_overrides("projection_dim=384,vision_config.image_size=64,image_depth_choices=[2, 4]")
        {'projection_dim': 384, 'vision_config': {'image_size': 64}, 'image_depth_choices': [2, 4]}
        >>> parse_config_overrides("text_config.pooling=mean")
        {'text_config': {'pooling': 'mean'}}
    """
    import json

    overrides: dict = {}
    items, depth, start = [], 0, 0
    text = (text or "").strip()
    for position, character in enumerate(text + ","):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(character, 0)
        if character == "," and depth == 0:
            items.append(text[start:position].strip())
            start = position + 1
    for item in filter(None, items):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"--config_overrides: {item!r} is not key=value (e.g. 'vision_config.image_size=64').")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = value.strip()
        *parents, name = key.strip().split(".")
        if len(parents) > 1:
            raise ValueError(f"--config_overrides: {key!r} goes more than one level deep; use sub_config.key.")
        target = overrides.setdefault(parents[0], {}) if parents else overrides
        if not isinstance(target, dict):
            raise ValueError(f"--config_overrides: {parents[0]!r} is given both as a value and as a sub-config.")
        target[name] = value
    return overrides



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
                "shape of the small preset; 'multilingual-e5-small': the offline multilingual-e5-small of the "
                "multilingual extra, 12 layers of hidden 384)."})
    vision_backbone: str | None = field(default=None, metadata={
        "help": "From a preset only: a ViT or CLIP folder or Hub id whose weights start the image tower."})
    config_overrides: str | None = field(default=None, metadata={
        "help": "From a preset only: config fields to change, as transformers' example scripts take them, e.g. "
                "'projection_dim=384,vision_config.image_size=64,vision_config.num_hidden_layers=4,"
                "image_depth_choices=[2,4]' (values are JSON; a dot reaches into text_config / vision_config / "
                "multimodal_config)."})
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
    product_embedding: str = field(default="multimodal", metadata={
        "help": "*_to_product tasks: which embedding of the product is retrieved: multimodal (image + text fused, "
                "the paper's), text (its title / description) or image. The Omni-retrieval pretraining trains all "
                "three; on a small catalog with a pretrained text tower, text starts from what that tower knows.",
        "choices": ["multimodal", "text", "image"]})
    hard_negatives: bool = field(default=False, metadata={
        "help": "Build each training batch from products close in the starting model's embedding space, so that the "
                "in-batch negatives are hard ones (mined once before training, redrawn each epoch; see "
                "commercemm_hf/training/hard_negatives.py)."})

    def retrieval_kinds(self) -> tuple[str, str]:
        """(source, target) embedding kinds of `task`, with `product_embedding` as the target of *_to_product.

        Example:
            >>> RetrievalArguments(task="query_to_product", product_embedding="text").retrieval_kinds()
            ('text', 'text')
        """
        source, target = RETRIEVAL_TASKS[self.task]
        if self.task.endswith("_to_product"):
            return source, self.product_embedding
        if self.product_embedding != "multimodal":
            raise ValueError(f"--product_embedding applies to the *_to_product tasks, not to {self.task!r} "
                             f"(which retrieves {target} embeddings).")
        return source, target


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


def setup_logging(training_args: TrainingArguments) -> None:
    """transformers' example-script logging: INFO on the main process, warnings elsewhere."""
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    for name in (__name__, "__main__", CheckpointSizeCallback.__module__, "commercemm_hf.training.hard_negatives"):
        logging.getLogger(name).setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.warning(f"Process rank: {training_args.process_index} of {training_args.world_size}, "
                   f"device: {training_args.device}")
