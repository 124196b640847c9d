"""Target 4: achieved GFLOP/s of the training step against a plain torch.matmul of the matched FFN shape.

FLOPs of a step are counted once with `torch.utils.flop_counter.FlopCounterMode` (forward + backward of every
matmul, convolution and attention; the CPU SDPA kernel is added to its registry, see `common.flop_counter`;
element-wise work and the AdamW update count 0, as in the counter). Achieved GFLOP/s = FLOPs / median step time.
The reference is `torch.matmul` of the FFN's first layer, (batch x tokens) x 256 by 256 x 1024, at training batch 8
with the token counts of the three stacks (text 32, image 65 = 64 patches + [CLS], multimodal 98); the headline uses
the fastest of the three (the most demanding reference). The steps and the matmuls are timed in the same run,
alternating.

Steps: the trainer's step (two-pass, 14 tasks: image-text pass + backward, Omni pass + backward, one AdamW step)
and the FLAVA-equivalent image-text step of target 1.

Usage: python bench/bench_flops.py [--threads 1 2] [--repeats 10] [--quick]
"""

import sys

import common
from common import FFN, HIDDEN, IMAGE_SIZE, PATCH_SIZE, TEXT_TOKENS, TRAIN_BATCH, torch


NAME = "flops"
TITLE = "Target 4 - achieved GFLOP/s of the training step vs torch.matmul of the FFN shape (batch 8, fp32)"
TOKENS = {"text": TEXT_TOKENS, "image": (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1,
          "multimodal": 1 + (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1 + TEXT_TOKENS}


def main():
    args = common.finish_args(common.parser(__doc__.splitlines()[0]).parse_args())
    model = common.build_commercemm_pretraining()
    optimizer = common.optimizer_for(model)
    it_batch, om_batch = common.image_text_batch(), common.omni_batch()
    steps = {
        "two_pass_14_task_step": lambda: common.commercemm_two_pass_step(model, optimizer, it_batch, om_batch),
        "image_text_step": lambda: common.commercemm_image_text_step(model, optimizer, it_batch),
    }
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(HIDDEN, FFN, generator=generator)
    activations = {stack: torch.randn(TRAIN_BATCH * tokens, HIDDEN, generator=generator)
                   for stack, tokens in TOKENS.items()}
    matmuls = {f"matmul_{stack}": (lambda x=x: torch.matmul(x, weight)) for stack, x in activations.items()}
    flops = {name: common.count_flops(function) for name, function in steps.items()}
    flops.update({f"matmul_{stack}": 2 * x.shape[0] * HIDDEN * FFN for stack, x in activations.items()})
    rows, raw = [], {"flops": flops, "tokens": TOKENS}
    for threads in args.threads:
        common.set_threads(threads)
        timings = common.compare({**steps, **matmuls}, repeats=args.repeats, warmup=args.warmup)
        raw[f"timing_threads_{threads}"] = timings
        gflops = {name: flops[name] / timing["median_s"] / 1e9 for name, timing in timings.items()}
        raw[f"gflops_threads_{threads}"] = gflops
        reference = max(matmuls, key=gflops.get)
        shape = f"{activations[reference[7:]].shape[0]}x{HIDDEN} @ {HIDDEN}x{FFN}"
        rows.append(common.ratio_row("4", f"two-pass 14-task step GFLOP/s vs matmul {shape}", threads,
                                     gflops["two_pass_14_task_step"], gflops[reference], 0.75, "GFLOP/s"))
        rows.append(common.ratio_row("4 info", "  image-text (FLAVA task set) step GFLOP/s vs the same matmul",
                                     threads, gflops["image_text_step"], gflops[reference], None, "GFLOP/s"))
        for name in matmuls:
            rows.append(common.row("4 info", f"  matmul {activations[name[7:]].shape[0]}x{HIDDEN} @ {HIDDEN}x{FFN} "
                                   f"({name[7:]} tokens)", threads, gflops[name], None, None, unit="GFLOP/s"))
    rows.append(common.row("4 info", "FLOPs per step (two-pass 14-task / image-text)", "-",
                           flops["two_pass_14_task_step"] / 1e9, flops["image_text_step"] / 1e9, None, unit="GFLOP"))
    common.write_results(NAME, TITLE, rows, args, {"raw": raw})


if __name__ == "__main__":
    sys.exit(main())
