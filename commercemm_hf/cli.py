"""The `commercemm` command line (also `python -m commercemm_hf`).

  commercemm demo       the main job on the built-in SYNTHETIC demo catalog: build the catalog, train a tokenizer,
                        pretrain a tiny CommerceMM on all 14 tasks (two passes per step), evaluate zero-shot retrieval
                        before and after, save a Hub-ready folder, reload it through AutoModel / AutoProcessor, print a
                        results table and write a PNG of example retrievals
  commercemm pretrain   pretrain on your own image-text and Omni rows (or the demo catalog), from a preset, a config,
                        an existing CommerceMM folder or imported backbones; resumable; every TrainingArguments flag
                        (--bf16, --gradient_accumulation_steps, --report_to, --deepspeed, ...)
  commercemm ablation   the same pretraining with task subsets (ITC only, no Omni, no MIM, no modality
                        randomization), as one table
  commercemm evaluate   the 7 downstream tasks (categorization, attributes, image<->text, query/view/post->product)
                        of a saved model on the demo catalog or your files, zero-shot or with fine-tuned heads
  commercemm embed      embed a product catalog into safetensors shards for product-search and vector stores
                        (resumable; split across processes under accelerate launch)
  commercemm publish    write the model card (MODEL_CARD.md, with the measured metrics) into a Hub-ready folder and
                        upload it with huggingface_hub (--dry-run: list the files, no network)
  commercemm export     the text, image and multimodal embeddings as ONNX graphs (dynamic batch and length,
                        --quantize int8), checked against eager PyTorch on padded batches (see export.py)
"""

import argparse
import json
import time
from pathlib import Path


def _table(rows: list[tuple[str, float, float]]) -> str:
    lines = [f"{'metric':42s} {'before':>8s} {'after':>8s}", "-" * 60]
    lines += [f"{name:42s} {before:8.3f} {after:8.3f}" for name, before, after in rows]
    return "\n".join(lines)


def run_demo(output_dir: str, num_products: int = 400, steps: int = 300, batch_size: int = 32, seed: int = 0) -> dict:
    import torch
    from transformers import AutoModel, AutoProcessor

    from . import CommerceMMForPreTraining
    from .data import demo_baselines
    from .data.schema import without_old_direction_names
    from .evaluation.retrieval_examples import save_retrieval_examples
    from .hub import save_hub_folder
    from .training.recipes import prepare_demo, pretrain, zero_shot_metrics

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    started = time.time()
    print(f"[1/6] Building the SYNTHETIC demo catalog ({num_products} products) and training a BPE tokenizer ...",
          flush=True)
    demo = prepare_demo(num_products=num_products, seed=seed)
    print(f"      {len(demo.train_rows)} image-text rows, {len(demo.train_omni)} Omni rows for training; "
          f"{len(demo.catalog['validation'])} held-out products", flush=True)
    torch.manual_seed(seed)
    model = CommerceMMForPreTraining(demo.config)

    def evaluate() -> dict:
        return zero_shot_metrics(model.commercemm, demo.processor, demo.validation_omni, demo.validation_rows)

    print("[2/6] Zero-shot retrieval before pretraining ...", flush=True)
    before = evaluate()
    print(f"[3/6] Pretraining the tiny preset on all 14 tasks for {steps} steps (two passes per step) ...", flush=True)
    pretrain(model, demo.processor, demo.train_rows, demo.train_omni, output / "pretraining", steps,
             batch_size=batch_size, seed=seed)
    print("[4/6] Zero-shot retrieval after pretraining ...", flush=True)
    after = evaluate()
    picture = save_retrieval_examples(model.commercemm, demo.processor, demo.validation_omni,
                                      output / "retrieval_examples.png")

    print("[5/6] Saving the Hub-ready folder and reloading it with AutoModel / AutoProcessor ...", flush=True)
    folder = save_hub_folder(model.commercemm, demo.processor, output / "commercemm-tiny-demo")
    reloaded = AutoModel.from_pretrained(folder).eval()
    reloaded_processor = AutoProcessor.from_pretrained(folder)
    sample = demo.validation_rows.select(range(4))
    images, texts = list(sample["image"]), list(sample["text"])
    with torch.no_grad():
        reference = model.commercemm.eval()(**demo.processor(images=images, text=texts))
        again = reloaded(**reloaded_processor(images=images, text=texts, return_tensors="pt"))
    reload_diff = float((reference.multimodal_embeds - again.multimodal_embeds).abs().max())

    print("[6/6] Results\n", flush=True)
    baselines = demo_baselines(demo.catalog["validation"])
    # the results hold each direction metric under its old name too (for old readers): print each once
    keys = [key for key in without_old_direction_names(after) if key.endswith(("recall@1", "recall@10", "mrr"))]
    print("CommerceMM demo (SYNTHETIC catalog, zero-shot on held-out validation products)\n")
    print(_table([(key, before[key], after[key]) for key in keys]))
    print("\nNon-learned baselines on the same products:")
    for task, metrics in baselines.items():
        print(f"  {task:38s} recall@1 {metrics['recall@1']:.3f}  recall@10 {metrics['recall@10']:.3f}")
    print(f"\nExample retrievals: {picture}")
    print(f"Reloaded folder {folder}: max |difference| of multimodal embeddings = {reload_diff:.2e}")
    print(f"Total time: {time.time() - started:.0f} s")
    results = {"before": before, "after": after, "baselines": baselines, "reload_max_abs_diff": reload_diff,
               "folder": str(folder), "picture": picture}
    (output / "demo_results.json").write_text(json.dumps(results, indent=2))
    return results


def _load_rows(args):
    """Image-text and Omni rows from the user's files (or the demo catalog), with load reports printed."""
    from .data.loading import load_image_text_dataset, load_omni_dataset

    if args.train_file is None and args.omni_file is None:
        from .training.recipes import prepare_demo

        print(f"No --train-file / --omni-file: using the SYNTHETIC demo catalog ({args.num_products} products).")
        demo = prepare_demo(num_products=args.num_products, seed=args.seed, preset=args.preset)
        return demo.train_rows, demo.train_omni, demo.processor.tokenizer
    if args.train_file is None or args.omni_file is None:
        raise SystemExit("commercemm pretrain needs both --train-file (image-text rows) and --omni-file (Omni rows).")
    image_text, report = load_image_text_dataset(args.train_file, split=args.split, image_column=args.image_column,
                                                 text_column=args.text_column, on_bad_rows=args.on_bad_rows,
                                                 num_proc=args.preprocessing_num_workers)
    print(f"image-text rows: {report}")
    omni, omni_report = load_omni_dataset(args.omni_file, split=args.split, on_bad_rows=args.on_bad_rows,
                                          num_proc=args.preprocessing_num_workers)
    print(f"Omni rows: {omni_report}")
    return image_text, omni, None


def run_pretrain(args) -> Path:
    import torch

    from . import CommerceMMConfig, CommerceMMForPreTraining, create_model_and_processor
    from .hub import save_hub_folder
    from .training.arguments import parse_config_overrides
    from .training.augmentation import augmentation_from_flags
    from .training.recipes import pretrain, with_tasks

    image_text, omni, demo_tokenizer = _load_rows(args)
    output = Path(args.output_dir)
    torch.manual_seed(args.seed)
    tasks = (lambda config: with_tasks(config, args.tasks.split(","))) if args.tasks else None
    if args.model and args.config_overrides:
        raise SystemExit("--config-overrides changes a preset's architecture; --model continues a saved one.")
    if args.model:  # continue pretraining a CommerceMM folder, with its own processor
        model, processor = create_model_and_processor(args.model, CommerceMMForPreTraining, config_transform=tasks)
    else:
        # a preset without backbones starts from the factory's from-scratch initialisation unless
        # --initializer-range says otherwise (create_model_and_processor holds that rule)
        config = CommerceMMConfig.from_json_file(args.config) if args.config else args.preset
        overrides = {} if args.initializer_range is None else {"initializer_range": args.initializer_range}
        overrides.update(parse_config_overrides(args.config_overrides))
        model, processor = create_model_and_processor(
            config, CommerceMMForPreTraining, **overrides,
            texts=lambda: list(image_text["text"]) + [text for text in omni["source_text"] if text],
            tokenizer=args.tokenizer or (None if args.text_backbone else demo_tokenizer),
            text_backbone=args.text_backbone, vision_backbone=args.vision_backbone, vocab_size=args.vocab_size,
            config_transform=tasks)
    pretrain(model, processor, image_text, omni, output / "checkpoints", args.steps, batch_size=args.batch_size,
             omni_batch_size=args.omni_batch_size, learning_rate=args.learning_rate, seed=args.seed,
             modality_randomization=False if args.no_modality_randomization else None, resume=args.resume,
             save_steps=args.save_steps, augment=augmentation_from_flags(
                 args.augment, args.augment_scale_min, args.augment_flip, args.augment_jitter, args.seed),
             **getattr(args, "training_arguments", {}))
    folder = save_hub_folder(model.commercemm, processor, output / "model")
    print(f"Saved the Hub-ready folder {folder} (load it with AutoModel.from_pretrained(folder)).")
    return folder


def default_threads() -> tuple[int, str]:
    """(threads, why): the cores this process may use minus the 1-minute load average, at least 1.

    torch starts one intra-op thread per core; when other jobs hold some of them, those threads wait on each other
    (busy-waiting at each parallel region), so a run under load burns several times the CPU of an idle one for the
    same work. Starting below the busy cores avoids that; an idle machine keeps every core."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores, f"{cores} cores"
    threads = max(1, min(cores, round(cores - load)))
    return threads, f"{cores} cores, load average {load:.1f}"


def configure_threads(threads: int | None) -> int:
    """Set torch's CPU threads: `threads` when given, else OMP_NUM_THREADS when set, else `default_threads()`; say so.

    Example:
        >>> configure_threads(1)
        Using 1 CPU thread (--threads).
        1
    """
    import os

    import torch

    if threads is not None:
        if threads < 1:
            raise SystemExit(f"--threads must be at least 1, got {threads}.")
        why = "--threads"
    elif os.environ.get("OMP_NUM_THREADS"):
        threads, why = torch.get_num_threads(), "OMP_NUM_THREADS"
    else:
        threads, why = default_threads()
        why += "; --threads N or OMP_NUM_THREADS sets it"
    torch.set_num_threads(threads)
    print(f"Using {threads} CPU thread{'s' if threads > 1 else ''} ({why}).", flush=True)
    return threads


def training_arguments_from_flags(flags: list[str]) -> dict:
    """The `TrainingArguments` fields that `flags` set, as keyword arguments: any `TrainingArguments` flag, with
    underscores or dashes (`--bf16`, `--gradient_accumulation_steps 4`, `--gradient-checkpointing`,
    `--dataloader_num_workers 4`, `--report_to wandb`, `--deepspeed ds.json`, ...). Only what is given is returned, so
    the recipe's defaults hold for the rest; an unknown flag is an error.

    Example:
        >>> training_arguments_from_flags(["--bf16", "--gradient-accumulation-steps", "4", "--report_to", "none"])
        {'bf16': True, 'gradient_accumulation_steps': 4, 'report_to': 'none'}
    """
    import argparse

    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser(TrainingArguments, prog="commercemm pretrain")
    for action in parser._actions:
        action.default = argparse.SUPPRESS  # keep only the flags that were given
        action.required = False
    given = vars(parser.parse_args(flags))
    for own in ("output_dir", "seed"):
        if own in given:
            raise SystemExit(f"commercemm pretrain: use --{own.replace('_', '-')} (the command's own flag) for {own}.")
    return given


def run_ablation_command(args) -> dict:
    from .training.recipes import ABLATIONS, ablation_table, run_ablation

    variants = [name for name in ABLATIONS if not args.variants or any(v in name for v in args.variants.split(","))]
    print(f"Ablation on the SYNTHETIC demo catalog ({args.num_products} products, {args.steps} steps each): "
          f"{', '.join(variants)}", flush=True)
    results = run_ablation(Path(args.output_dir), num_products=args.num_products, steps=args.steps,
                           batch_size=args.batch_size, seed=args.seed, variants=variants)
    print("\n" + ablation_table(results))
    print(f"\nResults: {Path(args.output_dir) / 'ablation_results.json'} (finished variants are kept; rerun to resume)")
    return results


def run_evaluate_command(args) -> dict:
    """`commercemm evaluate`: the 7 downstream tasks of a saved model (and optional fine-tuned heads) on a split of
    the demo catalog or on the user's image-text / Omni files; prints a table and writes the metrics as JSON.

    Example:
        >>> main(["evaluate", "outputs/demo/commercemm-tiny-demo"])  # doctest: +SKIP
    """
    from transformers import AutoModel, AutoProcessor

    from . import CommerceMMForProductCategorization
    from .evaluation.downstream import downstream_table, evaluate_downstream
    from .factory import check_model_folder

    check_model_folder(args.model)  # a broken folder named, not a TypeError from transformers
    model = AutoModel.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    heads = {name: CommerceMMForProductCategorization.from_pretrained(folder).eval() if folder else None
             for name, folder in (("categorization", args.categorization_model), ("attributes", args.attribute_model))}
    if args.image_text_file or args.omni_file:
        from .data.loading import load_image_text_dataset, load_omni_dataset

        rows = omni = None
        label_column, attribute_column = "label", None
        if args.image_text_file:
            rows, report = load_image_text_dataset(args.image_text_file, split=args.split or "train",
                                                   image_column=args.image_column, text_column=args.text_column,
                                                   label_column=args.label_column, on_bad_rows=args.on_bad_rows)
            print(f"image-text rows: {report}")
            if args.label_column and len(rows) and isinstance(rows[0]["label"], list):
                label_column, attribute_column = None, "label"  # a list per row: attribute prediction (task 2)
        if args.omni_file:
            omni, report = load_omni_dataset(args.omni_file, split=args.split or "train", on_bad_rows=args.on_bad_rows)
            print(f"Omni rows: {report}")
        if rows is None:
            raise SystemExit("commercemm evaluate needs --image-text-file (one row per product) as well.")
        source = " and ".join(str(path) for path in (args.image_text_file, args.omni_file) if path)
    else:
        from .data.demo_catalog import build_demo_catalog
        from .data.schema import to_image_text_rows, to_omni_rows

        size = model.config.vision_config.image_size
        catalog = build_demo_catalog(num_products=args.num_products, seed=args.seed, image_size=size)
        split = catalog[args.split or "test"]
        rows, omni = to_image_text_rows(split), to_omni_rows(split)
        label_column, attribute_column = "label", "attribute_labels"
        source = f"the SYNTHETIC demo catalog, {args.split or 'test'} split ({len(split)} products)"
    metrics = evaluate_downstream(model, processor, rows, omni, heads["categorization"], heads["attributes"],
                                  label_column=label_column, attribute_column=attribute_column,
                                  batch_size=args.batch_size)
    label = "fine-tuned heads" if any(heads.values()) else "zero-shot"
    print(f"\nDownstream tasks of {args.model} on {source}\n")
    print(downstream_table({label: metrics}))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(metrics, indent=2))
        print(f"\nMetrics written to {args.output}")
    return metrics


def run_publish_command(args) -> dict:
    """`commercemm publish`: `commercemm_hf.publish.publish` with the token from `--token-env VAR` (else HF_TOKEN or
    the stored login); folder and token problems exit with a message.

    Example:
        >>> main(["publish", "outputs/demo/commercemm-tiny-demo", "--repo-id", "org/cmm",
        ...       "--dry-run"])  # doctest: +SKIP
    """
    import os

    from .publish import PublishError, publish

    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token and not args.dry_run:
            raise SystemExit(f"commercemm publish: the environment variable {args.token_env} (--token-env) is not set.")
    try:
        return publish(args.folder, args.repo_id, token=token, private=args.private, dry_run=args.dry_run,
                       metrics=args.metrics, training_data=args.training_data, commit_message=args.commit_message)
    except PublishError as error:
        raise SystemExit(f"commercemm publish: {error}") from None


def add_flag(container, *names: str, **kwargs):
    """`container.add_argument` with each `--dashed-name` also spelt `--underscored_name`: the command line speaks
    the example scripts' (and `TrainingArguments`') vocabulary too, so `--train_file` and `--train-file` are one
    flag. The first name gives the destination.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = add_flag(parser, "--output-dir", default="out")
        >>> parser.parse_args(["--output_dir", "x"]).output_dir, parser.parse_args([]).output_dir
        ('x', 'out')
    """
    spelt = list(names)
    for name in names:
        underscored = "--" + name[2:].replace("-", "_")
        if name.startswith("--") and underscored not in spelt:
            spelt.append(underscored)
    return container.add_argument(*spelt, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The `commercemm` argument parser (every subcommand and flag)."""
    parser = argparse.ArgumentParser(prog="commercemm", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    compute = argparse.ArgumentParser(add_help=False)
    add_flag(compute, "--threads", type=int, default=None,
                         help="CPU threads for torch (default: OMP_NUM_THREADS when set, else the cores this process "
                              "may use minus the current load average, at least 1)")

    demo = commands.add_parser("demo", parents=[compute], help="the end-to-end demo on the synthetic catalog")
    add_flag(demo, "--output-dir", default="outputs/demo")
    add_flag(demo, "--num-products", type=int, default=400)
    add_flag(demo, "--steps", type=int, default=300)
    add_flag(demo, "--batch-size", type=int, default=32)
    add_flag(demo, "--seed", type=int, default=0)

    train = commands.add_parser(
        "pretrain", parents=[compute], help="pretrain on your data (or the demo catalog)",
        epilog="Every transformers TrainingArguments flag works too, with underscores or dashes, e.g. --bf16, "
               "--gradient_accumulation_steps 4, --gradient_checkpointing, --dataloader_num_workers 4, "
               "--logging_steps 50, --report_to wandb, --warmup_steps 500, --max_grad_norm 1.0, "
               "--deepspeed ds_config.json; they override the short forms above (--steps is --max_steps, "
               "--batch-size --per_device_train_batch_size).")
    add_flag(train, "--train-file", help="image-text rows: .jsonl/.csv/.parquet, saved dataset, image folder or "
                                            "Hub dataset name (columns image, text)")
    add_flag(train, "--omni-file", help="Omni rows (source_type, source_text, source_image, product_id, image, text)")
    add_flag(train, "--split", default=None, help="split of the sources to read (e.g. train)")
    add_flag(train, "--image-column", default="image")
    add_flag(train, "--text-column", default="text")
    add_flag(train, "--on-bad-rows", choices=("skip", "raise"), default="skip")
    add_flag(train, "--preprocessing-num-workers", type=int, default=None,
             help="processes checking the rows (datasets.map num_proc; the check is cached, runs once); "
                  "--dataloader-num-workers N (a TrainingArguments flag) sets the loader's workers")
    add_flag(train, "--num-products", type=int, default=400, help="demo catalog size when no files are given")
    start = train.add_mutually_exclusive_group()
    add_flag(start, "--preset", default="tiny", choices=("tiny", "small", "base"))
    add_flag(start, "--config", help="a CommerceMMConfig JSON file")
    add_flag(start, "--model", help="a CommerceMM folder to continue pretraining")
    add_flag(start, "--model-name-or-path", help="the example scripts' spelling: a preset name (= --preset) or a "
                                                 "CommerceMM folder (= --model)")
    add_flag(train, "--text-backbone", help="BERT/RoBERTa/XLM-R folder or Hub id to import ('minilm': the "
                                               "offline all-MiniLM-L6-v2 of the minilm extra; "
                                               "'multilingual-e5-small': that of the multilingual extra)")
    add_flag(train, "--vision-backbone", help="ViT or CLIP folder or Hub id to import")
    add_flag(train, "--config-overrides", help="a preset's fields to change, as the example scripts take them, e.g. "
                                               "'vision_config.image_size=64,vision_config.patch_size=8'")
    add_flag(train, "--augment", action="store_true", help="random resized crop, flip and colour jitter of the "
                                                           "training images of both streams (no torchvision)")
    add_flag(train, "--augment-scale-min", type=float, default=0.5, help="smallest crop area share (--augment)")
    add_flag(train, "--augment-flip", type=float, default=0.5, help="horizontal flip probability (--augment)")
    add_flag(train, "--augment-jitter", type=float, default=0.4, help="colour jitter strength (--augment)")
    add_flag(train, "--initializer-range", type=float, default=None, help="std of the initial weights (default: "
                       "1/sqrt(text hidden size) for a preset trained from scratch, else the config's value)")
    add_flag(train, "--tokenizer", "--tokenizer-name",
             help="a tokenizer folder (default: the text backbone's, or one trained on the data)")
    add_flag(train, "--vocab-size", type=int, default=8000)
    add_flag(train, "--tasks", help="comma-separated subset of the 14 tasks (default: all)")
    add_flag(train, "--steps", type=int, default=1000)
    add_flag(train, "--batch-size", type=int, default=32)
    add_flag(train, "--omni-batch-size", type=int, default=None)
    add_flag(train, "--learning-rate", type=float, default=5e-4)
    add_flag(train, "--save-steps", type=int, default=None)
    add_flag(train, "--no-modality-randomization", action="store_true")
    add_flag(train, "--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    add_flag(train, "--output-dir", default="outputs/pretrain")
    add_flag(train, "--seed", type=int, default=0)

    ablation = commands.add_parser("ablation", parents=[compute],
                                   help="pretraining ablations on the demo catalog, as one table")
    add_flag(ablation, "--output-dir", default="outputs/ablation")
    add_flag(ablation, "--num-products", type=int, default=1000)
    add_flag(ablation, "--steps", type=int, default=300)
    add_flag(ablation, "--batch-size", type=int, default=32)
    add_flag(ablation, "--variants", help="comma-separated substrings of variant names (default: all)")
    add_flag(ablation, "--seed", type=int, default=0)

    evaluate = commands.add_parser("evaluate", parents=[compute], help="the 7 downstream tasks of a saved model")
    evaluate.add_argument("model", help="a CommerceMM folder (pretrained or retrieval fine-tuned) or Hub id")
    add_flag(evaluate, "--categorization-model", help="a fine-tuned multi-class categorization folder (task 1)")
    add_flag(evaluate, "--attribute-model", help="a fine-tuned multi-label categorization folder (task 2)")
    add_flag(evaluate, "--image-text-file", help="one row per product (image, text, labels); default: demo catalog")
    add_flag(evaluate, "--omni-file", help="Omni rows (queries, other views, tagged posts) for tasks 5-7")
    add_flag(evaluate, "--split", default=None, help="split to read (demo catalog: train/validation/test)")
    add_flag(evaluate, "--image-column", default="image")
    add_flag(evaluate, "--text-column", default="text")
    add_flag(evaluate, "--label-column", default=None, help="label column of --image-text-file: one class per "
                                                                "row (task 1) or a list of labels per row (task 2)")
    add_flag(evaluate, "--on-bad-rows", choices=("skip", "raise"), default="skip")
    add_flag(evaluate, "--num-products", type=int, default=400, help="demo catalog size (as the model was trained)")
    add_flag(evaluate, "--seed", type=int, default=0)
    add_flag(evaluate, "--batch-size", type=int, default=32)
    add_flag(evaluate, "--output", help="write the metrics to this JSON file")

    publish = commands.add_parser("publish", help="write the model card and upload a Hub-ready folder")
    publish.add_argument("folder", help="a folder written by save_hub_folder (e.g. outputs/demo/commercemm-tiny-demo)")
    add_flag(publish, "--repo-id", required=True, help="the Hub repository, ORG/NAME")
    add_flag(publish, "--metrics", help="a JSON file of metrics for the card (default: all_results.json, "
                                           "eval_results.json or demo_results.json in the folder or its parent)")
    add_flag(publish, "--training-data", help="a description of the training data for the card")
    add_flag(publish, "--private", action="store_true", help="create the repository as private")
    add_flag(publish, "--dry-run", action="store_true", help="write the card and list the files; upload nothing")
    add_flag(publish, "--token-env", metavar="VAR", help="read the token from this environment variable "
                                                            "(default: HF_TOKEN, then the stored `hf auth login`)")
    add_flag(publish, "--commit-message", help="the Hub commit message")

    from .export import add_export_parser
    from .search.embedding_job import add_embed_parser

    add_embed_parser(commands)  # `commercemm embed`: products -> embedding shards (commercemm_hf/search/)
    add_export_parser(commands)  # `commercemm export`: ONNX graphs of the towers (commercemm_hf/export.py)
    return parser


def parse_arguments(argv=None) -> argparse.Namespace:
    """Parse a `commercemm` command line; `pretrain`'s unknown flags go to `TrainingArguments`."""
    parser = build_parser()
    args, training_flags = parser.parse_known_args(argv)
    if training_flags and args.command != "pretrain":
        parser.error(f"unrecognized arguments: {' '.join(training_flags)}")
    if args.command == "pretrain":
        args.training_arguments = training_arguments_from_flags(training_flags)
        if args.model_name_or_path:
            from .modeling.configuration_commercemm import PRESETS

            if args.model_name_or_path in PRESETS:
                args.preset = args.model_name_or_path
            else:
                args.model = args.model_name_or_path
    return args


def main(argv=None):
    args = parse_arguments(argv)
    if hasattr(args, "threads"):  # the commands that compute on the CPU
        configure_threads(args.threads)
    if args.command == "demo":
        run_demo(args.output_dir, args.num_products, args.steps, args.batch_size, args.seed)
    elif args.command == "pretrain":
        run_pretrain(args)
    elif args.command == "ablation":
        run_ablation_command(args)
    elif args.command == "evaluate":
        run_evaluate_command(args)
    elif args.command == "publish":
        run_publish_command(args)
    elif args.command == "embed":
        args.run(args)
    elif args.command == "export":
        args.handler(args)


if __name__ == "__main__":
    main()
