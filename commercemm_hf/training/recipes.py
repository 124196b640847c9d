"""Ready-made pretraining runs shared by the command line, the examples and the benchmarks.

`prepare_demo` builds the SYNTHETIC demo catalog with its rows, a tokenizer trained on it, the processor and a config;
`pretrain` runs `CommerceMMPretrainingTrainer` for a number of steps on any image-text and Omni rows (optionally a
subset of the 14 tasks, which is how the ablations are made); `zero_shot_metrics` measures retrieval on held-out rows;
`run_ablation` pretrains the same model on the same data and steps with different task sets and tabulates the result.
"""

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments
from transformers.trainer_callback import PrinterCallback

from ..data.schema import DIRECTIONS, direction_metric, to_image_text_rows, to_omni_rows
from ..modeling.configuration_commercemm import IMAGE_TEXT_TASKS, PRETRAINING_TASKS, CommerceMMConfig
from ..modeling.modeling_commercemm_pretraining import CommerceMMForPreTraining
from .checkpoints import CheckpointSizeCallback
from .trainer import CommerceMMPretrainingTrainer


#: The ablations of the paper's recipe: task sets and modality randomization, each trained from the same start.
ABLATIONS = {
    "full (14 tasks)": dict(tasks=PRETRAINING_TASKS, modality_randomization=True),
    "ITC only (CLIP-style)": dict(tasks=("itc",), modality_randomization=False),
    "no Omni (5 image-text tasks)": dict(tasks=IMAGE_TEXT_TASKS, modality_randomization=True),
    "no MIM": dict(tasks=tuple(t for t in PRETRAINING_TASKS if not t.startswith("mim")), modality_randomization=True),
    "no modality randomization": dict(tasks=PRETRAINING_TASKS, modality_randomization=False),
}

OMNI_DIRECTIONS = tuple(direction.name for direction in DIRECTIONS)


@dataclass
class DemoData:
    """The demo catalog and everything a run on it needs."""

    catalog: object
    train_rows: object
    train_omni: object
    validation_rows: object
    validation_omni: object
    processor: object
    config: CommerceMMConfig
    extra: dict = field(default_factory=dict)


def prepare_demo(num_products: int = 400, seed: int = 0, preset: str = "tiny", vocab_size: int = 4000,
                 **config_overrides) -> DemoData:
    """Build the SYNTHETIC demo catalog, its image-text and Omni rows, a BPE tokenizer trained on its training texts,
    the processor and a `preset` config sized to them."""
    from ..data.demo_catalog import build_demo_catalog
    from ..processing import CommerceMMProcessor, train_commercemm_tokenizer

    config = CommerceMMConfig.from_preset(preset, **config_overrides)
    size = config.vision_config.image_size
    catalog = build_demo_catalog(num_products=num_products, seed=seed, image_size=size)
    texts = list(catalog["train"]["text"]) + [query for queries in catalog["train"]["queries"] for query in queries]
    tokenizer = train_commercemm_tokenizer(texts, vocab_size=vocab_size, model_max_length=64)
    config = CommerceMMConfig.from_preset(preset, **{**config_overrides, "text_config": {
        **config_overrides.get("text_config", {}), "vocab_size": len(tokenizer)}})
    processor = CommerceMMProcessor.from_model_config(config, tokenizer)
    return DemoData(
        catalog=catalog,
        train_rows=to_image_text_rows(catalog["train"], include_views=True),
        train_omni=to_omni_rows(catalog["train"]),
        validation_rows=to_image_text_rows(catalog["validation"]),
        validation_omni=to_omni_rows(catalog["validation"]),
        processor=processor,
        config=config,
    )


def with_tasks(config: CommerceMMConfig, tasks) -> CommerceMMConfig:
    """A copy of `config` computing only `tasks` (the others get loss weight 0, so they cost nothing)."""
    unknown = set(tasks) - set(PRETRAINING_TASKS)
    if unknown:
        raise ValueError(f"Unknown pretraining tasks {sorted(unknown)}; choose from {list(PRETRAINING_TASKS)}.")
    weights = dict(config.loss_weights)
    values = config.to_dict()
    values["loss_weights"] = {task: (weights.get(task, 1.0) or 1.0) if task in tasks else 0.0
                              for task in PRETRAINING_TASKS}
    return CommerceMMConfig.from_dict(values)


def pretrain(model: CommerceMMForPreTraining, processor, image_text_rows, omni_rows, output_dir, steps: int,
             batch_size: int = 32, omni_batch_size: int | None = None, learning_rate: float = 5e-4, seed: int = 0,
             modality_randomization: bool | None = None, resume: bool = False, save_steps: int | None = None,
             show_progress: bool = True, augment=None, **training_arguments) -> CommerceMMPretrainingTrainer:
    """Pretrain `model` for `steps` optimizer steps (two forward/backward passes each) and return the trainer.
    `augment`: an `ImageAugmentation` for the training images of both streams (`--augment`).

    Example:
        >>> import tempfile
        >>> demo = prepare_demo(num_products=12, vocab_size=300, vision_config={"image_size": 32})
        >>> model = CommerceMMForPreTraining(demo.config)
        >>> trainer = pretrain(model, demo.processor, demo.train_rows, demo.train_omni, tempfile.mkdtemp(), steps=2,
        ...                    batch_size=4, show_progress=False)
        >>> trainer.state.global_step, sorted(trainer.state.log_history[-1])[:2]
        (2, ['epoch', 'step'])
    """
    defaults = dict(
        max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=learning_rate,
        warmup_steps=max(1, steps // 20), weight_decay=0.01, logging_steps=max(1, steps // 10),
        save_steps=save_steps or max(1, steps // 2), save_total_limit=1, report_to=[], seed=seed,
        disable_tqdm=not show_progress,
    )
    args = TrainingArguments(str(output_dir), **{**defaults, **training_arguments})  # the caller's flags win
    trainer = CommerceMMPretrainingTrainer(model=model, args=args, train_dataset=image_text_rows,
                                           omni_dataset=omni_rows, processor=processor, omni_batch_size=omni_batch_size,
                                           modality_randomization=modality_randomization, augment=augment)
    trainer.add_callback(CheckpointSizeCallback())  # a checkpoint holds the optimizer state too: say how big
    if not show_progress:
        trainer.remove_callback(PrinterCallback)  # without a progress bar, Trainer prints every log dict instead
    trainer.train(resume_from_checkpoint=True if resume else None)
    return trainer


def zero_shot_metrics(model, processor, validation_omni, validation_rows=None, batch_size: int = 64,
                      **depths) -> dict[str, float]:
    """Zero-shot retrieval of held-out rows: each Omni source type → product, and image ↔ text."""
    from ..evaluation.zero_shot import image_text_retrieval_metrics, omni_retrieval_metrics

    metrics = omni_retrieval_metrics(model, processor, validation_omni, batch_size=batch_size, **depths)
    if validation_rows is not None:
        metrics.update(image_text_retrieval_metrics(model, processor, validation_rows, batch_size=batch_size, **depths))
    return metrics


def mean_omni_recall_at_10(metrics: dict[str, float]) -> float:
    # direction_metric reads the old names too: results files written before the directions were renamed
    values = [value for value in (direction_metric(metrics, direction, "recall@10") for direction in OMNI_DIRECTIONS)
              if not math.isnan(value)]
    return sum(values) / len(values) if values else math.nan


def run_ablation(output_dir, num_products: int = 400, steps: int = 300, batch_size: int = 32, seed: int = 0,
                 variants=None, show_progress: bool = False) -> dict[str, dict[str, float]]:
    """Pretrain the tiny preset from the same initial weights, on the same demo data and steps, once per variant of
    `ABLATIONS`; return each variant's zero-shot metrics on the held-out products (plus `seconds`).

    Each finished variant is written at once to `output_dir/ablation_results.json`, and a variant already there for
    the same settings is not run again, so a long ablation that stops resumes where it was, and variants can run
    in separate processes (`variants=`) that share one `output_dir`."""
    results_file = Path(output_dir) / "ablation_results.json"
    settings = {"num_products": num_products, "steps": steps, "batch_size": batch_size, "seed": seed}
    saved = json.loads(results_file.read_text()) if results_file.is_file() else {}
    done = saved.get("variants", {}) if saved.get("settings") == settings else {}
    demo = prepare_demo(num_products=num_products, seed=seed)
    results = {}
    for name in variants or ABLATIONS:
        if name in done:
            results[name] = done[name]
            print(f"  {name}: mean Omni recall@10 {results[name]['mean_omni_recall@10']:.3f} (already measured)")
            continue
        spec = ABLATIONS[name]
        torch.manual_seed(seed)
        model = CommerceMMForPreTraining(with_tasks(demo.config, spec["tasks"]))
        started = time.time()
        pretrain(model, demo.processor, demo.train_rows, demo.train_omni,
                 Path(output_dir) / name.split(" (")[0].replace(" ", "_").lower(), steps, batch_size=batch_size,
                 seed=seed, modality_randomization=spec["modality_randomization"], show_progress=show_progress,
                 save_strategy="no")
        seconds = time.time() - started
        metrics = zero_shot_metrics(model.commercemm, demo.processor, demo.validation_omni, demo.validation_rows)
        results[name] = {**metrics, "mean_omni_recall@10": mean_omni_recall_at_10(metrics), "seconds": seconds}
        # re-read before writing: another process may have finished other variants into the same file meanwhile
        saved = json.loads(results_file.read_text()) if results_file.is_file() else {}
        done = {**(saved.get("variants", {}) if saved.get("settings") == settings else {}), name: results[name]}
        results_file.parent.mkdir(parents=True, exist_ok=True)
        staging = results_file.with_suffix(f".{os.getpid()}.tmp")
        staging.write_text(json.dumps({"settings": settings, "variants": done}, indent=2))
        staging.replace(results_file)
        print(f"  {name}: mean Omni recall@10 {results[name]['mean_omni_recall@10']:.3f} ({seconds:.0f} s)", flush=True)
    return results


def ablation_table(results: dict[str, dict[str, float]]) -> str:
    columns = ["mean_omni_recall@10", "image_to_text_recall@10", "text_to_image_recall@10"]
    short = ["query→prod", "view→prod", "post→prod", "Omni mean", "img→text", "text→img"]
    lines = [f"{'variant (R@10, held-out products)':34s}" + "".join(f"{name:>11s}" for name in short),
             "-" * (34 + 11 * len(short))]
    for name, metrics in results.items():
        values = [direction_metric(metrics, direction, "recall@10") for direction in OMNI_DIRECTIONS]
        values += [metrics.get(column, math.nan) for column in columns]
        lines.append(f"{name:34s}" + "".join(f"{value:11.3f}" for value in values))
    return "\n".join(lines)


__all__ = ["ABLATIONS", "DemoData", "ablation_table", "mean_omni_recall_at_10", "prepare_demo", "pretrain",
           "run_ablation", "with_tasks", "zero_shot_metrics"]
