"""Target 3: inference embeddings/s against CLIPModel (sdpa) and FlavaModel at the matched architecture.

* text tower: `CommerceMMModel.get_text_features` vs `CLIPModel.get_text_features` (attn_implementation="sdpa"),
  32-token texts without padding;
* image tower: `get_image_features` of both on 128-px images;
* fused pair: `CommerceMMModel.get_multimodal_features` (text tower + image tower + multimodal encoder) vs
  `FlavaModel(input_ids=..., pixel_values=...)` (text + image + multimodal encoder; FLAVA's attention is eager, the
  only implementation transformers has for it).
At batch 32 and batch 1, fp32, `torch.inference_mode`, models in eval mode. Both sides of a row are timed in the same
run, alternating, after warm-up (median of `--repeats` samples; at batch 1 a sample averages several calls so that
it lasts >= 50 ms). `--compile` adds a `torch.compile`d CommerceMM side (compilation happens in the warm-up).

Usage: python bench/bench_inference.py [--threads 1 2] [--repeats 10] [--quick] [--compile]
"""

import sys

import common
from common import INFER_BATCH, torch


NAME = "inference"
TITLE = "Target 3 - inference embeddings/s vs CLIPModel-sdpa (towers) and FlavaModel (fused pair), fp32"
KINDS = ("text", "image", "fused")


def sides(ours, clip, flava, kind: str, inputs: dict, use_compile: bool) -> dict:
    text = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    pixels = inputs["pixel_values"]
    if kind == "text":
        mine, peer = ours.get_text_features, (lambda: clip.get_text_features(**text))
        call = lambda function: function(**text).pooler_output  # noqa: E731
    elif kind == "image":
        mine, peer = ours.get_image_features, (lambda: clip.get_image_features(pixel_values=pixels))
        call = lambda function: function(pixel_values=pixels).pooler_output  # noqa: E731
    else:
        mine, peer = ours.get_multimodal_features, (lambda: flava(**text, pixel_values=pixels).multimodal_embeddings)
        call = lambda function: function(**text, pixel_values=pixels).pooler_output  # noqa: E731
    result = {"commercemm": lambda: call(mine), "peer": peer}
    if use_compile:
        compiled = common.compiled(mine, True)
        result["commercemm_compiled"] = lambda: call(compiled)
    return result


def main():
    args = common.finish_args(common.parser(__doc__.splitlines()[0]).parse_args())
    ours, clip, flava = common.build_commercemm_model(), common.build_clip(), common.build_flava_model()
    batches = (INFER_BATCH, 1)
    inputs = {batch: common.inference_inputs(batch) for batch in batches}
    peers = {"text": "CLIPModel-sdpa text", "image": "CLIPModel-sdpa vision", "fused": "FlavaModel multimodal"}
    rows, raw = [], {}
    for threads in args.threads:
        common.set_threads(threads)
        for kind in KINDS:
            for batch in batches:
                with torch.inference_mode():
                    timings = common.compare(sides(ours, clip, flava, kind, inputs[batch], args.compile),
                                             repeats=args.repeats, warmup=args.warmup + (2 if args.compile else 0))
                raw[f"{kind}_batch{batch}_threads{threads}"] = timings
                rate = common.rates(timings, batch)
                rows.append(common.ratio_row("3", f"{kind} embeddings/s, batch {batch}, vs {peers[kind]}", threads,
                                             rate["commercemm"], rate["peer"], 1.0, "emb/s"))
                if args.compile:
                    rows.append(common.ratio_row("3 info", f"  torch.compile'd {kind}, batch {batch}, vs the peer",
                                                 threads, rate["commercemm_compiled"], rate["peer"], None, "emb/s"))
    common.write_results(NAME, TITLE, rows, args, {"raw": raw})


if __name__ == "__main__":
    sys.exit(main())
