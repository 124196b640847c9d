"""Training the task heads with `Trainer`: the collators of `CommerceMMForProductCategorization` and
`CommerceMMForRetrieval`, categorization `compute_metrics` (accuracy, macro-F1; micro-F1 for multi-label, through
`evaluate`), and `CommerceMMRetrievalTrainer`, whose `evaluate` ranks *every distinct product of the split* for each
source (Recall@1/5/10, MRR, nDCG@10 with pessimistic ties), also under `torchrun` / `accelerate launch`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from ..data.checks import decode_lazy_rows
from ..data.schema import stable_id
from .disk_space import disk_full_named
from .finetuning_data import RETRIEVAL_FIELDS, LabelSpec


logger = logging.getLogger(__name__)

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
        rows = decode_lazy_rows(rows)  # a lazily checked stream's images: bad rows leave the batch
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
        rows = decode_lazy_rows(rows)
        batch = {}
        for part, fields, prefix in (("source", source_fields, "source_"), ("target", target_fields, "")):
            if part not in self.parts:
                continue
            values = {modality: [row[column] for row in rows] for modality, column in fields.items()}
            for modality, items in values.items():
                missing = [i for i, item in enumerate(items)
                           if item is None or (modality == "text" and not item.strip())]
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

    def __init__(self, *args, train_sampler=None, **kwargs):
        self._setup_head_training(kwargs.get("args"))
        super().__init__(*args, **kwargs)
        self._after_init()
        # e.g. `hard_negatives.HardNegativeSampler`: batches of similar products instead of a random order
        self.train_sampler = train_sampler

    def _get_train_sampler(self, train_dataset=None):
        if self.train_sampler is not None and (train_dataset is None or train_dataset is self.train_dataset):
            return self.train_sampler
        return super()._get_train_sampler(train_dataset)

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
