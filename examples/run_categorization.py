#!/usr/bin/env python
"""Fine-tune CommerceMM for product categorization: multi-class (a label per row) or multi-label (a list of labels
per row), from the image, the text or both.

    python examples/run_categorization.py --output_dir outputs/categorization                 # the demo catalog
    python examples/run_categorization.py --train_file train.jsonl --validation_file val.jsonl \\
        --label_column category --output_dir outputs/my-categorizer                           # your rows

Writes `all_results.json` / `eval_results.json` (accuracy, macro-F1; micro-F1 for multi-label) and a Hub-ready folder
in `--output_dir` that loads with `pipeline("product-categorization", model=output_dir, trust_remote_code=True)`.
Every `TrainingArguments` flag works; a run resumes from the last checkpoint in `--output_dir`.
"""

from transformers import TrainingArguments

from commercemm_hf import CommerceMMForProductCategorization
from commercemm_hf.training import finetuning as ft


def main(argv=None):
    model_args, data_args, task_args, training_args = ft.start(
        (ft.ModelArguments, ft.DataArguments, ft.CategorizationArguments, TrainingArguments), argv)
    modalities = ft.resolve_modalities(task_args, data_args)
    splits = ft.load_data(training_args, lambda: ft.load_categorization_data(
        data_args, task_args, ft.model_image_size(model_args), modalities))
    labels = ft.label_spec(splits, task_args.multi_label)
    splits = ft.select_splits(splits, data_args, training_args)
    ft.logger.info(f"{len(labels.names)} labels ({'multi-label' if labels.multi_label else 'multi-class'}) from "
                   f"{modalities}; rows: { {name: len(rows) for name, rows in splits.items()} }")

    # the head records what it reads, so the pipeline warns on inputs lacking one of those modalities
    model, processor = ft.load_model_and_processor(model_args, CommerceMMForProductCategorization,
                                                   lambda: ft.training_texts(splits), **labels.config_overrides(),
                                                   expected_modalities=ft.MODALITY_INPUTS[modalities])
    trainer = ft.CommerceMMCategorizationTrainer(
        model=model, args=training_args, train_dataset=splits.get("train"), eval_dataset=splits.get("validation"),
        data_collator=ft.CategorizationCollator(processor, labels, modalities, model_args.max_seq_length,
                                               augment=data_args.augmentation(training_args.seed)),
        processing_class=processor,
        compute_metrics=ft.categorization_compute_metrics(labels.multi_label, task_args.multi_label_threshold),
    )
    return ft.run_training(trainer, splits, training_args, model_args)


if __name__ == "__main__":
    main()
