"""Target 6: what modality randomization buys at inference: active depths -> latency and zero-shot Recall@10.

For each choice of active depths (text, image, multimodal):
* query-embedding latency: `get_text_features` (a search query is text) on 32-token texts;
* product-embedding latency: `get_multimodal_features` (image + title through both towers and the multimodal encoder);
  both on the matched architecture (hidden 256, 4 text / 4 image / 2 multimodal layers, 128-px images), fp32,
  `torch.inference_mode`, at batch 32 and batch 1; all depth choices of one measurement alternate in the same run;
* zero-shot Recall@10 on the demo validation split (held-out products of the SYNTHETIC demo catalog) of a tiny
  CommerceMM pretrained with modality randomization (the tiny preset has the same stack depths, 4/4/2): query ->
  product (the query's text embedding at that text depth against products' multimodal embeddings at those depths)
  and the mean over query/view/post -> product. By default the demo model is pretrained here, briefly
  (`--num-products`, `--steps`); `--model FOLDER` evaluates a saved demo model instead (e.g. the
  `commercemm-tiny-demo` folder of `python -m commercemm_hf demo`; give the `--num-products`/`--seed` it used).
The target: half text depth embeds queries >= 1.8x faster than full depth at batch 32 (batch 1 reported too).

Usage: python bench/bench_modality_randomization.py [--threads 1 2] [--repeats 10] [--quick]
           [--model FOLDER] [--num-products 400] [--steps 100]
"""

import sys
import tempfile
import time

import common
from common import IMAGE_LAYERS, INFER_BATCH, MULTIMODAL_LAYERS, TEXT_LAYERS, torch


NAME = "modality_randomization"
TITLE = "Target 6 - modality randomization: active depths -> latency (matched architecture) and demo Recall@10"
FULL = (TEXT_LAYERS, IMAGE_LAYERS, MULTIMODAL_LAYERS)
DEPTHS = {
    "full": FULL,
    "half text": (TEXT_LAYERS // 2, IMAGE_LAYERS, MULTIMODAL_LAYERS),
    "half image": (TEXT_LAYERS, IMAGE_LAYERS // 2, MULTIMODAL_LAYERS),
    "half multimodal": (TEXT_LAYERS, IMAGE_LAYERS, MULTIMODAL_LAYERS // 2),
    "all half": (TEXT_LAYERS // 2, IMAGE_LAYERS // 2, MULTIMODAL_LAYERS // 2),
}


def latencies(model, args) -> dict:
    """{threads: {(kind, batch): compare-result over the depth choices}}."""
    inputs = {batch: common.inference_inputs(batch) for batch in (INFER_BATCH, 1)}
    result = {}
    for threads in args.threads:
        common.set_threads(threads)
        for batch, x in inputs.items():
            text = dict(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
            query = {name: (lambda d=d: model.get_text_features(**text, text_depth=d[0]).pooler_output)
                     for name, d in DEPTHS.items()}
            product = {name: (lambda d=d: model.get_multimodal_features(
                **text, pixel_values=x["pixel_values"], text_depth=d[0], image_depth=d[1], multimodal_depth=d[2]
            ).pooler_output) for name, d in DEPTHS.items()}
            with torch.inference_mode():
                for kind, functions in (("query", query), ("product", product)):
                    result[(threads, kind, batch)] = common.compare(functions, repeats=args.repeats,
                                                                    warmup=args.warmup)
    return result


def demo_recall(args) -> tuple[dict, dict]:
    """Recall@10 per depth choice on the demo validation split, and how the demo model was obtained."""
    from commercemm_hf import CommerceMMForPreTraining, CommerceMMModel, CommerceMMProcessor
    from commercemm_hf.training.recipes import mean_omni_recall_at_10, prepare_demo, pretrain, zero_shot_metrics

    demo = prepare_demo(num_products=args.num_products, seed=args.seed)
    started = time.time()
    if args.model:
        model = CommerceMMModel.from_pretrained(args.model).eval()
        processor = CommerceMMProcessor.from_pretrained(args.model)
        source = {"model": args.model}
    else:
        common.set_threads(min(args.threads))  # on a shared 2-core machine 1 thread trains ~5x faster than 2
        torch.manual_seed(args.seed)
        trainer_model = CommerceMMForPreTraining(demo.config)
        with tempfile.TemporaryDirectory() as folder:
            pretrain(trainer_model, demo.processor, demo.train_rows, demo.train_omni, folder, args.steps,
                     batch_size=32, seed=args.seed, show_progress=False, save_strategy="no")
        model, processor = trainer_model.commercemm.eval(), demo.processor
        source = {"pretrained_here": True, "steps": args.steps, "num_products": args.num_products,
                  "pretraining_seconds": time.time() - started}
    layers = tuple(model.config.stack_config(s).num_hidden_layers for s in ("text", "image", "multimodal"))
    recall = {}
    for name, depths in DEPTHS.items():
        # the demo model's own depths at the same fractions of each stack
        scaled = tuple(max(1, d * n // f) for d, n, f in zip(depths, layers, FULL))
        metrics = zero_shot_metrics(model, processor, demo.validation_omni, text_depth=scaled[0],
                                    image_depth=scaled[1], multimodal_depth=scaled[2])
        recall[name] = {"depths": scaled, "query_recall@10": metrics.get("query_to_product_recall@10"),
                        "mean_omni_recall@10": mean_omni_recall_at_10(metrics), "metrics": metrics}
    source["validation_products"] = len(demo.catalog["validation"])
    return recall, source


def depth_table(timings: dict, recall: dict, threads: int) -> str:
    lines = [f"active depths -> latency (ms, matched architecture, {threads} thread(s)) and demo zero-shot R@10",
             f"{'choice':12s} {'t/i/f':>6s} {'query b32':>10s} {'query b1':>9s} {'product b32':>12s} "
             f"{'product b1':>11s} {'query R@10':>11s} {'Omni R@10':>10s}", "-" * 89]
    for name, depths in DEPTHS.items():
        ms = {key: timings[(threads, *key)][name]["median_s"] * 1e3
              for key in (("query", INFER_BATCH), ("query", 1), ("product", INFER_BATCH), ("product", 1))}
        lines.append(f"{name:12s} {'/'.join(map(str, depths)):>6s} {ms[('query', INFER_BATCH)]:10.2f} "
                     f"{ms[('query', 1)]:9.3f} {ms[('product', INFER_BATCH)]:12.2f} {ms[('product', 1)]:11.3f} "
                     f"{recall[name]['query_recall@10']:11.3f} {recall[name]['mean_omni_recall@10']:10.3f}")
    return "\n".join(lines)


def main():
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a saved (pretrained) demo CommerceMMModel folder")
    parser.add_argument("--num-products", type=int, default=400, help="demo catalog size (10%% held out)")
    parser.add_argument("--steps", type=int, default=100, help="demo pretraining steps when no --model")
    parser.add_argument("--seed", type=int, default=0)
    args = common.finish_args(parser.parse_args())
    if args.quick and not args.model:
        args.steps, args.num_products = min(args.steps, 20), min(args.num_products, 120)
    recall, source = demo_recall(args)
    model = common.build_commercemm_model()
    timings = latencies(model, args)
    rows, tables = [], []
    for threads in args.threads:
        for batch in (INFER_BATCH, 1):
            query = timings[(threads, "query", batch)]
            full, half = query["full"]["median_s"] * 1e3, query["half text"]["median_s"] * 1e3
            headline = batch == INFER_BATCH  # the target's row; batch 1 is reported for information
            rows.append(common.row("6" if headline else "6 info", f"half text depth query speed-up, batch {batch} "
                                   "(ours = half, peer = full)", threads, half, full, full / half,
                                   ">=1.8x" if headline else None, (full / half >= 1.8) if headline else None, "ms"))
        tables.append(depth_table(timings, recall, threads))
    for name, values in recall.items():
        rows.append(common.row("6 info", f"demo zero-shot R@10 at {name} depths {values['depths']} (query | Omni)",
                               "-", values["query_recall@10"], values["mean_omni_recall@10"], None))
    raw = {"latency": {f"threads{t}_{kind}_batch{b}": v for (t, kind, b), v in timings.items()},
           "recall": recall, "demo_model": source}
    common.write_results(NAME, TITLE, rows, args, {"raw": raw}, extra_tables=tables)


if __name__ == "__main__":
    sys.exit(main())
