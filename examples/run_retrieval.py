#!/usr/bin/env python
"""Fine-tune CommerceMM for retrieval in one direction (`--task`): query_to_product (text -> product), image_to_product
(another view -> product), product_to_product (image + text, e.g. a tagged post -> product), image_to_text or
text_to_image, with InfoNCE over in-batch negatives.

    python examples/run_retrieval.py --task query_to_product --output_dir outputs/query-to-product    # the demo catalog
    python examples/run_retrieval.py --task query_to_product --train_file train.jsonl \\
        --query_column query --output_dir outputs/my-search                                         # your rows

Evaluation embeds every distinct product of the split and ranks them for each source: Recall@1/5/10, MRR and nDCG@10
go to `all_results.json` / `eval_results.json`. The Hub-ready folder in `--output_dir` holds the fine-tuned
CommerceMMModel and loads with `pipeline("product-search", model=output_dir, trust_remote_code=True)`.
Every `TrainingArguments` flag works; a run resumes from the last checkpoint in `--output_dir`.
"""

from transformers import TrainingArguments

from commercemm_hf import CommerceMMForRetrieval
from commercemm_hf.training import finetuning as ft


def main(argv=None):
    model_args, data_args, task_args, training_args = ft.start(
        (ft.ModelArguments, ft.DataArguments, ft.RetrievalArguments, TrainingArguments), argv)
    splits = ft.load_data(training_args, lambda: ft.load_retrieval_data(
        data_args, task_args, ft.model_image_size(model_args)))
    # without validation rows, hold out whole products
    splits = ft.select_splits(splits, data_args, training_args, group_column="product_id")
    ft.logger.info(f"{task_args.task}: rows { {name: len(rows) for name, rows in splits.items()} }")

    source, target = task_args.retrieval_kinds()
    model, processor = ft.load_model_and_processor(model_args, CommerceMMForRetrieval,
                                                   lambda: ft.training_texts(splits),
                                                   retrieval_source=source, retrieval_target=target)
    collator = ft.RetrievalCollator(processor, task_args.task, model_args.max_seq_length,
                                    augment=data_args.augmentation(training_args.seed))
    sampler = None
    if task_args.hard_negatives and training_args.do_train and "train" in splits:
        sampler = ft.hard_negative_sampler(model, collator, splits["train"], training_args.per_device_train_batch_size,
                                           seed=training_args.seed)
    trainer = ft.CommerceMMRetrievalTrainer(
        model=model, args=training_args, train_dataset=splits.get("train"), eval_dataset=splits.get("validation"),
        data_collator=collator, processing_class=processor, train_sampler=sampler,
    )
    # the folder holds the fine-tuned CommerceMMModel: AutoModel, product-search and product-embedding load it
    return ft.run_training(trainer, splits, training_args, model_args, hub_model=model.commercemm)


if __name__ == "__main__":
    main()
