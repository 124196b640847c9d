"""The `commercemm` command line (also `python -m commercemm_hf`).

`commercemm demo` runs the main job on the built-in SYNTHETIC demo catalog: build the catalog, train a tokenizer,
pretrain a tiny CommerceMM on all 14 tasks (two passes per step), evaluate zero-shot retrieval before and after,
save a Hub-ready folder, reload it through `AutoModel` / `AutoProcessor`, and print a results table.
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
    from transformers import AutoModel, AutoProcessor, TrainingArguments

    from . import CommerceMMConfig, CommerceMMForPreTraining, CommerceMMImageProcessor, CommerceMMProcessor
    from . import train_commercemm_tokenizer
    from .data import build_demo_catalog, demo_baselines, to_image_text_rows, to_omni_rows
    from .evaluation.zero_shot import image_text_retrieval_metrics, omni_retrieval_metrics
    from .hub import save_hub_folder
    from .training import CommerceMMPretrainingTrainer

    output = Path(output_dir)
    started = time.time()
    print(f"[1/6] Building the SYNTHETIC demo catalog ({num_products} products) ...", flush=True)
    catalog = build_demo_catalog(num_products=num_products, seed=seed, image_size=64)
    train_rows, val_rows = to_image_text_rows(catalog["train"], include_views=True), to_image_text_rows(catalog["validation"])
    train_omni, val_omni = to_omni_rows(catalog["train"]), to_omni_rows(catalog["validation"])
    print(f"      {len(train_rows)} image-text rows, {len(train_omni)} Omni rows for training; "
          f"{len(catalog['validation'])} held-out products", flush=True)

    print("[2/6] Training a byte-level BPE tokenizer ...", flush=True)
    texts = list(catalog["train"]["text"]) + [q for qs in catalog["train"]["queries"] for q in qs]
    tokenizer = train_commercemm_tokenizer(texts, vocab_size=4000, model_max_length=64)
    config = CommerceMMConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)})
    size = config.vision_config.image_size
    processor = CommerceMMProcessor(
        CommerceMMImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}), tokenizer
    )
    torch.manual_seed(seed)
    model = CommerceMMForPreTraining(config)

    def evaluate() -> dict:
        metrics = omni_retrieval_metrics(model.commercemm, processor, val_omni, batch_size=64)
        metrics.update(image_text_retrieval_metrics(model.commercemm, processor, val_rows, batch_size=64))
        return metrics

    print("[3/6] Zero-shot retrieval before pretraining ...", flush=True)
    before = evaluate()

    print(f"[4/6] Pretraining the tiny preset on all 14 tasks for {steps} steps ...", flush=True)
    args = TrainingArguments(
        str(output / "pretraining"), max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=5e-4,
        warmup_steps=max(1, steps // 20), weight_decay=0.01, logging_steps=max(1, steps // 10),
        save_steps=max(1, steps // 2), save_total_limit=1, report_to=[], seed=seed, use_cpu=True,
    )
    trainer = CommerceMMPretrainingTrainer(model=model, args=args, train_dataset=train_rows, omni_dataset=train_omni,
                                           processor=processor)
    trainer.train()

    print("[5/6] Zero-shot retrieval after pretraining ...", flush=True)
    after = evaluate()

    print("[6/6] Saving the Hub-ready folder and reloading it with AutoModel / AutoProcessor ...", flush=True)
    folder = save_hub_folder(model.commercemm, processor, output / "commercemm-tiny-demo")
    reloaded = AutoModel.from_pretrained(folder).eval()
    reloaded_processor = AutoProcessor.from_pretrained(folder)
    sample = val_rows.select(range(4))
    images, texts = list(sample["image"]), list(sample["text"])
    inputs = reloaded_processor(images=images, text=texts, return_tensors="pt")
    with torch.no_grad():
        reference = model.commercemm.eval()(**processor(images=images, text=texts))
        again = reloaded(**inputs)
    reload_diff = float((reference.multimodal_embeds - again.multimodal_embeds).abs().max())

    baselines = demo_baselines(catalog["validation"])
    keys = [key for key in after if key.endswith(("recall@1", "recall@10", "mrr"))]
    print("\nCommerceMM demo (SYNTHETIC catalog, held-out validation products)\n")
    print(_table([(key, before[key], after[key]) for key in keys]))
    print("\nNon-learned baselines on the same products:")
    for task, metrics in baselines.items():
        print(f"  {task:38s} recall@1 {metrics['recall@1']:.3f}  recall@10 {metrics['recall@10']:.3f}")
    print(f"\nReloaded folder {folder}: max |difference| of multimodal embeddings = {reload_diff:.2e}")
    print(f"Total time: {time.time() - started:.0f} s")
    results = {"before": before, "after": after, "baselines": baselines, "reload_max_abs_diff": reload_diff,
               "folder": str(folder)}
    (output / "demo_results.json").write_text(json.dumps(results, indent=2))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="commercemm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="the end-to-end demo on the synthetic catalog")
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.add_argument("--num-products", type=int, default=400)
    demo.add_argument("--steps", type=int, default=300)
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        run_demo(args.output_dir, args.num_products, args.steps, args.batch_size, args.seed)


if __name__ == "__main__":
    main()
