#!/usr/bin/env python
"""Pretrain CommerceMM on all 14 tasks (two forward/backward passes per step: image-text, then Omni-Retrieval) with
`CommerceMMPretrainingTrainer`, from a preset (from scratch) or a CommerceMM folder.

    python examples/run_pretraining.py --output_dir outputs/pretraining --max_steps 300          # the demo catalog
    python examples/run_pretraining.py --train_file pairs.jsonl --omni_file omni.jsonl \\
        --model_name_or_path small --max_steps 5000 --output_dir outputs/pretraining              # your rows

`--train_file` rows hold `image` and `text`; `--omni_file` rows hold `source_type` (query, view or post),
`source_text`, `source_image`, `product_id` and the product's `image` and `text` (image paths relative to the file).
Writes `all_results.json` / `eval_results.json` (pretraining losses and zero-shot retrieval on the validation rows)
and a Hub-ready CommerceMMModel folder in `--output_dir`, which `run_categorization.py` and `run_retrieval.py` take
as `--model_name_or_path`. Every `TrainingArguments` flag works; a run resumes from the last checkpoint (both data
streams at the right position).
"""

from datasets import DatasetDict
from transformers import TrainingArguments

from commercemm_hf import CommerceMMForPreTraining
from commercemm_hf.data import load_image_text_dataset, load_omni_dataset, to_image_text_rows, to_omni_rows
from commercemm_hf.training import CommerceMMPretrainingTrainer
from commercemm_hf.training import finetuning as ft
from commercemm_hf.training.recipes import with_tasks


def load_rows(data_args, pretraining_args, image_size):
    """(image-text splits, Omni splits, load report) from the user's files or the demo catalog."""
    if data_args.uses_demo() and not pretraining_args.omni_file:
        catalog = ft.build_demo(data_args, image_size)
        image_text = DatasetDict({"train": to_image_text_rows(catalog["train"], include_views=True),
                                  "validation": to_image_text_rows(catalog["validation"])})
        omni = to_omni_rows(DatasetDict({name: catalog[name] for name in ("train", "validation")}))
        return image_text, omni, {"demo catalog": {name: len(rows) for name, rows in catalog.items()}}
    if not pretraining_args.omni_file:
        raise SystemExit("Pretraining on your rows needs --omni_file (the Omni stream) besides --train_file.")
    image_text, report = ft.load_splits(data_args, load_image_text_dataset,
                                        image_column=data_args.image_column or "image",
                                        text_column=data_args.text_columns())
    omni = DatasetDict()
    for split, path in (("train", pretraining_args.omni_file), ("validation", pretraining_args.validation_omni_file)):
        if path:
            omni[split], omni_report = load_omni_dataset(path, split="train", on_bad_rows=data_args.on_bad_rows,
                                                         num_proc=data_args.preprocessing_num_workers)
            report[path] = ft.report_dict(omni_report)
    return image_text, omni, report


def main(argv=None):
    model_args, data_args, pretraining_args, training_args = ft.start(
        (ft.ModelArguments, ft.DataArguments, ft.PretrainingArguments, TrainingArguments), argv)
    image_text, omni = ft.load_data(training_args, lambda: load_rows(
        data_args, pretraining_args, ft.model_image_size(model_args)))
    image_text = ft.select_splits(image_text, data_args, training_args)
    omni = ft.truncate_splits(omni, data_args)  # --max_train_samples / --max_eval_samples apply to both streams

    tasks = pretraining_args.tasks.split(",") if pretraining_args.tasks else None
    model, processor = ft.load_model_and_processor(
        model_args, CommerceMMForPreTraining, lambda: ft.training_texts(image_text) + ft.training_texts(omni),
        config_transform=(lambda config: with_tasks(config, tasks)) if tasks else None)
    trainer = CommerceMMPretrainingTrainer(
        model=model, args=training_args, train_dataset=image_text.get("train"), omni_dataset=omni.get("train"),
        processor=processor, eval_dataset=image_text.get("validation"), eval_omni_dataset=omni.get("validation"),
        omni_batch_size=pretraining_args.omni_batch_size,
        modality_randomization=pretraining_args.modality_randomization,
        augment=data_args.augmentation(training_args.seed),
    )
    return ft.run_training(trainer, image_text, training_args, model_args, hub_model=model.commercemm)


if __name__ == "__main__":
    main()
