"""Fine-tuning CommerceMM with transformers' `Trainer`: what `examples/run_*.py` share.

The example scripts (`examples/run_categorization.py`, `examples/run_retrieval.py`, `examples/run_pretraining.py`)
follow transformers' `examples/pytorch` scripts: `HfArgumentParser` dataclasses (ours plus every
`TrainingArguments` flag), `datasets` loading, `Trainer`, automatic resume from the last checkpoint, and
`all_results.json` / `eval_results.json` / `test_results.json` written with `Trainer.save_metrics`. Each job has its
file; this module is the scripts' one door (`from commercemm_hf.training import finetuning as ft`) and holds the run:

* `arguments.py`: the argument dataclasses and `parse_arguments` / `start`;
* `finetuning_data.py`: the rows (the user's files, a saved dataset, an image folder, a Hub dataset, or the
  SYNTHETIC demo catalog), the hold-out, the label set and each retrieval task's columns;
* the model and processor: `load_model_and_processor`, the scripts' flags through
  `commercemm_hf.create_model_and_processor`;
* `heads.py`: the heads' collators, categorization metrics and the two head Trainers;
* here, `run_training`: last-checkpoint detection, train / evaluate / test, metrics files, and the Hub-ready folder
  (`commercemm_hf.hub.save_hub_folder`) in `output_dir`, loadable with `pipeline(...)`.

Example (what `python examples/run_categorization.py --output_dir out` parses; with no `--do_*` flag it trains,
evaluates, and tests when there is a test split):
    >>> from transformers import TrainingArguments
    >>> from commercemm_hf.training import finetuning as ft
    >>> model_args, data_args, training_args = ft.parse_arguments(
    ...     (ft.ModelArguments, ft.DataArguments, TrainingArguments), ["--output_dir", "out", "--max_steps", "5"])
    >>> model_args.model_name_or_path, data_args.uses_demo(), training_args.max_steps
    ('tiny', True, 5)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from datasets import DatasetDict
from transformers import Trainer, TrainerState, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ..data.schema import TASK_SOURCE_TYPE
from ..modeling.configuration_commercemm import PRESETS
from .arguments import (
    CategorizationArguments,
    DataArguments,
    ModelArguments,
    PretrainingArguments,
    RetrievalArguments,
    parse_arguments,
    parse_config_overrides,
    setup_logging,
    start,
)
from .checkpoints import CheckpointSizeCallback, finished_run
from .finetuning_data import (
    MODALITY_INPUTS,
    RETRIEVAL_FIELDS,
    LabelSpec,
    build_demo,
    hold_out_validation,
    label_spec,
    load_categorization_data,
    load_retrieval_data,
    load_splits,
    model_image_size,
    report_dict,
    resolve_modalities,
    training_texts,
    truncate_splits,
)
from .hard_negatives import hard_negative_sampler
from .heads import (
    CategorizationCollator,
    CommerceMMCategorizationTrainer,
    CommerceMMRetrievalTrainer,
    RetrievalCollator,
    categorization_compute_metrics,
)


logger = logging.getLogger(__name__)


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
    if model_args.config_overrides and not scratch:
        raise ValueError(f"--config_overrides changes a preset's architecture; {model_args.model_name_or_path!r} is a "
                         f"saved model (presets: {', '.join(PRESETS)}).")
    config_overrides = {**parse_config_overrides(model_args.config_overrides), **config_overrides}
    return create_model_and_processor(
        model_args.model_name_or_path, model_class, texts=texts if scratch else None,
        tokenizer=model_args.tokenizer_name, text_backbone=model_args.text_backbone,
        vision_backbone=model_args.vision_backbone, vocab_size=model_args.vocab_size,
        max_seq_length=model_args.max_seq_length, trust_remote_code=model_args.trust_remote_code,
        config_transform=config_transform, **config_overrides)


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


def load_data(training_args: TrainingArguments, load: Callable[[], tuple]):
    """Run `load()` (returning the rows and a load report) on the main process first (the others then read the
    `datasets` cache), write the report to `data_report.json`, and return the rows."""
    with training_args.main_process_first(desc="loading the rows"):
        *rows, report = load()
    save_json(training_args, "data_report.json", report)
    return rows[0] if len(rows) == 1 else tuple(rows)


def run_training(trainer: Trainer, splits: DatasetDict, training_args: TrainingArguments, model_args: ModelArguments,
                 hub_model=None) -> dict[str, float]:
    """Train (resuming from the last checkpoint), evaluate on `validation`, test on `test`, write the metrics files
    (`train_results.json`, `eval_results.json`, `test_results.json`, `all_results.json`) and the Hub-ready folder
    (`hub_model`, default `trainer.model`, with the trainer's processor) into `output_dir`. Returns all metrics."""
    from ..hub import save_hub_folder

    results = {}
    evaluations = (("validation", training_args.do_eval, "eval"), ("test", training_args.do_predict, "test"))
    for split, wanted, prefix in evaluations:
        # checked before training: a run must not train for hours and then stop on a missing split
        if wanted and split not in splits:
            raise ValueError(f"--do_{'eval' if prefix == 'eval' else 'predict'} needs {split} rows.")
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
    for split, wanted, prefix in evaluations:
        # wanted None: "when the rows exist"; False: not asked for (e.g. --do_train alone)
        if wanted is False or split not in splits:
            continue
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
    "hard_negative_sampler", "parse_config_overrides",
    "report_dict", "resolve_modalities", "run_training", "save_json", "select_splits", "setup_logging", "start",
    "training_texts", "truncate_splits",
]
