"""Target 1: pretraining throughput and peak memory against transformers' FlavaForPreTraining.

FLAVA-equivalent task set (ITC, ITM, MLM, MIM on one paired batch of 8): for CommerceMM the image-text pass of
`CommerceMMForPreTraining` (its 5 image-text losses: MLM, MIM-kl, MIM-fr, ITC, ITM with hard negatives; the MIM
self-teacher is timed), for FLAVA `FlavaForPreTraining` with `input_ids_masked`, `bool_masked_pos`, precomputed
`mim_labels` (the DALL-E codebook is not timed) and `itm_labels` (its global contrastive, ITM, MMM-text and
MMM-image losses). A step is forward + backward + AdamW step, fp32. Also reported: the full 14-task two-pass step
(image-text pass + Omni pass, as `CommerceMMPretrainingTrainer.training_step` runs it) against the same FLAVA step.

Peak memory: each configuration runs in a fresh interpreter; peak RSS (VmHWM = ru_maxrss) minus the RSS right after
importing torch, transformers and both models' code.

`--compile` adds the image-text step through `torch.compile` (measured, not assumed; compiling takes minutes).

Usage: python bench/bench_pretraining.py [--threads 1 2] [--repeats 10] [--quick] [--no-memory] [--compile]
"""

import sys

import common
from common import TRAIN_BATCH


NAME = "pretraining"
TITLE = "Target 1 - pretraining step vs FlavaForPreTraining (matched architecture, batch 8, fp32, AdamW)"


def setups():
    """name -> (setup() returning a state, step(state))."""

    def cmm_image_text():
        model = common.build_commercemm_pretraining()
        return model, common.optimizer_for(model), common.image_text_batch()

    def cmm_two_pass():
        model = common.build_commercemm_pretraining()
        return model, common.optimizer_for(model), common.image_text_batch(), common.omni_batch()

    def flava():
        model = common.build_flava_pretraining()
        return model, common.optimizer_for(model), common.flava_batch()

    return {
        "commercemm_image_text": (cmm_image_text, lambda s: common.commercemm_image_text_step(*s)),
        "commercemm_two_pass_14": (cmm_two_pass, lambda s: common.commercemm_two_pass_step(*s)),
        "flava": (flava, lambda s: common.flava_step(*s)),
    }


def memory_child(name: str):
    # import everything both sides need before the baseline RSS is taken
    import transformers.models.flava.modeling_flava  # noqa: F401

    import commercemm_hf.modeling.modeling_commercemm_pretraining  # noqa: F401

    setup, step = setups()[name]
    common.peak_memory_child(setup, step, steps=3)


def main():
    args = common.finish_args(common.parser(__doc__.splitlines()[0]).parse_args())
    if args.memory_child:
        common.set_threads(args.threads[0])
        memory_child(args.memory_child)
        return
    rows, raw = [], {}
    configs = setups()
    states = {name: setup() for name, (setup, _) in configs.items()}
    # the work each step does (forward + backward matmuls/attention; see bench_flops.py), to tell a slower kernel
    # from a larger task set
    flops = {name: common.count_flops(lambda name=name: configs[name][1](states[name])) for name in configs}
    raw["flops"] = flops
    timed = {name: (lambda name=name: configs[name][1](states[name])) for name in configs}
    if args.compile:  # measured, not assumed: the same model and optimizer through torch.compile (compiled in warm-up)
        model, optimizer, batch = states["commercemm_image_text"]
        compiled = (common.compiled(model, True), optimizer, batch)
        timed["commercemm_image_text_compiled"] = lambda: common.commercemm_image_text_step(*compiled)
    for threads in args.threads:
        common.set_threads(threads)
        timings = common.compare(timed, repeats=args.repeats, warmup=args.warmup, min_seconds=0)
        raw[f"timing_threads_{threads}"] = timings
        rate = common.rates(timings, TRAIN_BATCH)
        rows.append(common.ratio_row("1", "FLAVA task set (ITC/ITM/MLM/MIM) samples/s vs FLAVA", threads,
                                     rate["commercemm_image_text"], rate["flava"], 1.5, "pairs/s"))
        rows.append(common.ratio_row("1 info", "14-task two-pass step, pairs/s (8 pairs + 8 Omni rows) vs FLAVA",
                                     threads, rate["commercemm_two_pass_14"], rate["flava"], None, "pairs/s"))
        if args.compile:
            rows.append(common.ratio_row("1 info", "  torch.compile'd FLAVA task set step vs eager FLAVA", threads,
                                         rate["commercemm_image_text_compiled"], rate["flava"], None, "pairs/s"))
        achieved = {name: flops[name] / timings[name]["median_s"] / 1e9 for name in configs}
        rows.append(common.ratio_row("1 info", "  achieved GFLOP/s, FLAVA task set step vs FLAVA's step", threads,
                                     achieved["commercemm_image_text"], achieved["flava"], None, "GFLOP/s"))
    memory_threads = [] if args.no_memory else (args.threads[:1] if args.quick else args.threads)
    for threads in memory_threads:
        memory = {name: common.measure_peak_memory(__file__, name, threads) for name in configs}
        raw[f"memory_threads_{threads}"] = memory
        ours, flava = memory["commercemm_image_text"]["peak_mb"], memory["flava"]["peak_mb"]
        rows.append(common.row("1", "FLAVA task set peak memory vs FLAVA (fresh process)", threads, ours, flava,
                               ours / flava, "<=1.0x", ours <= flava, "MB"))
        ours_t, flava_t = (memory["commercemm_image_text"]["step_transient_mb"],
                           memory["flava"]["step_transient_mb"])
        rows.append(common.row("1 info", "  of which one step's activations/temporaries", threads, ours_t, flava_t,
                               ours_t / flava_t if flava_t else None, None, None, "MB"))
        two = memory["commercemm_two_pass_14"]["peak_mb"]
        rows.append(common.row("1 info", "14-task two-pass step peak memory vs FLAVA", threads, two, flava,
                               two / flava, None, None, "MB"))
    rows.append(common.ratio_row("1 info", "FLOPs per step of 8 pairs: FLAVA task set vs FLAVA", "-",
                                 flops["commercemm_image_text"] / 1e9, flops["flava"] / 1e9, None, "GFLOP",
                                 note="ITM with ALBEF hard negatives fuses 3 pairs per pair (+ the masked pair): "
                                      "32 multimodal rows per 8 pairs against FLAVA's 8"))
    params = {name: sum(p.numel() for p in state[0].parameters()) for name, state in states.items()}
    common.write_results(NAME, TITLE, rows, args, {"raw": raw, "parameters": params})


if __name__ == "__main__":
    sys.exit(main())
