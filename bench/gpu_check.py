"""The GPU check: pretraining and fine-tuning on CUDA in bf16, and the speed of both against transformers' own models
on the same GPU. One command, under 8 minutes on one GPU; it prints the same kind of ratio table as `run_all.py`
and writes `bench/results/gpu_check.json`.

    python bench/gpu_check.py                       # on a CUDA machine
    python bench/gpu_check.py --device cpu --quick  # the same code paths on CPU, small (the test suite runs this)

1. first-step agreement: the tiny and small presets' 14 losses on one fixed batch, fp32 on the CPU against bf16
   autocast on the device (sdpa; flash-attention 2 as well when `flash_attn` is installed), dropout 0, the same
   CPU generator for the random draws (so the same masks and ITM negatives): every loss within `--tolerance`;
2. a bf16 pretraining run of `--steps` steps per preset with `CommerceMMPretrainingTrainer` on the demo catalog:
   every logged loss finite;
3. each example script (`run_pretraining.py`, `run_categorization.py`, `run_retrieval.py`) for a few steps on the
   device in bf16;
4. pretraining pairs/s and peak memory of the image-text pass (MLM, MIM-kl, MIM-fr, ITC, ITM) at the base preset
   (batch 64) against `FlavaForPreTraining` at the matched architecture, and the whole 14-task two-pass step;
5. embeddings/s of the text and image towers against `CLIPModel` (sdpa) at the base preset's towers.
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path, quiets warnings)
import torch


REPO = Path(__file__).resolve().parent.parent


def autocast(device, dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_sizes(config) -> dict:
    text, vision = config.text_config, config.vision_config
    return dict(image_size=vision.image_size, patch_size=vision.patch_size, vocab=text.vocab_size,
                text_tokens=min(common.TEXT_TOKENS, text.max_position_embeddings - 2))


def to_device(batch: dict, device) -> dict:
    return {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}


# ------------------------------------------------------------------------------------------ 1. first-step agreement


def step_losses(model, it_batch, om_batch, device, dtype) -> dict[str, float]:
    """The 14 losses of one two-pass step (no update), with a CPU generator for the random draws on any device."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad(), autocast(device, dtype):
        image_text = model(**to_device(it_batch, device), generator=generator)
        omni = model(**to_device(om_batch, device))
    return {task: float(value) for task, value in {**image_text.losses, **omni.losses}.items()}


def first_step_agreement(preset: str, device, dtype, tolerance: float, batch: int) -> list[dict]:
    from commercemm_hf import CommerceMMConfig, CommerceMMForPreTraining

    config = CommerceMMConfig.from_preset(preset, **{
        f"{stack}_config": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        for stack in ("text", "vision", "multimodal")})
    torch.manual_seed(0)
    model = CommerceMMForPreTraining(config).eval()
    sizes = batch_sizes(config)
    it_batch, om_batch = common.image_text_batch(batch, 0, **sizes), common.omni_batch(batch, 1, **{
        key: value for key, value in sizes.items() if key != "patch_size"})
    reference = step_losses(model, it_batch, om_batch, torch.device("cpu"), torch.float32)
    implementations = ["sdpa"]
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            implementations.append("flash_attention_2")
        except ImportError:
            pass
    model.to(device)
    rows = []
    for implementation in implementations:
        model.set_attn_implementation(implementation)
        losses = step_losses(model, it_batch, om_batch, device, dtype)
        worst = max(reference, key=lambda task: abs(losses[task] - reference[task]) / max(abs(reference[task]), 1e-6))
        error = abs(losses[worst] - reference[worst]) / max(abs(reference[worst]), 1e-6)
        finite = all(math.isfinite(value) for value in losses.values())
        rows.append(common.row(
            "gpu-1", f"{preset}: 14 losses {dtype_name(dtype)} {implementation} vs fp32 CPU, max rel. error", "-",
            error, None, None, f"<={tolerance:g}", finite and error <= tolerance and set(losses) == set(reference),
            note=f"worst: {worst} {losses[worst]:.4f} vs {reference[worst]:.4f}; {len(losses)} losses"))
    return rows


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


# ------------------------------------------------------------------------------------------ 2. bf16 pretraining run


def pretraining_run(preset: str, device, dtype, steps: int, batch: int, workdir: Path) -> dict:
    from transformers import TrainingArguments

    from commercemm_hf import CommerceMMForPreTraining
    from commercemm_hf.training import CommerceMMPretrainingTrainer
    from commercemm_hf.training.recipes import prepare_demo

    demo = prepare_demo(num_products=max(4 * batch, 64), preset=preset)
    torch.manual_seed(0)
    model = CommerceMMForPreTraining(demo.config)
    args = TrainingArguments(
        str(workdir / f"pretrain-{preset}"), max_steps=steps, per_device_train_batch_size=batch,
        learning_rate=2e-4, warmup_steps=max(1, steps // 10), logging_steps=max(1, steps // 5), save_strategy="no",
        report_to=[], seed=0, disable_tqdm=True, bf16=dtype == torch.bfloat16, use_cpu=device.type == "cpu",
        dataloader_num_workers=2 if device.type == "cuda" else 0,
    )
    trainer = CommerceMMPretrainingTrainer(model=model, args=args, train_dataset=demo.train_rows,
                                           omni_dataset=demo.train_omni, processor=demo.processor)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    logged = [row for row in trainer.state.log_history if "loss" in row and "step" in row]
    values = [value for row in logged for key, value in row.items() if key.endswith("_loss") or key == "loss"]
    finite = bool(values) and all(math.isfinite(value) for value in values)
    on_device = next(model.parameters()).device.type == device.type
    return common.row("gpu-2", f"{preset}: {steps} pretraining steps in {dtype_name(dtype)}, all losses finite", "-",
                      seconds, None, None, "finite", finite and on_device, unit="s",
                      note=f"last loss {logged[-1]['loss']:.3f}, {len(values)} logged values" if logged else "no logs")


# ------------------------------------------------------------------------------------------ 3. the example scripts


def example_run(script: str, device, dtype, workdir: Path, extra=()) -> dict:
    command = [sys.executable, str(REPO / "examples" / script), "--output_dir", str(workdir / script), "--max_steps",
               "3", "--per_device_train_batch_size", "8", "--demo_num_products", "64", "--report_to", "none",
               "--save_strategy", "no", *extra]
    if dtype == torch.bfloat16:
        command.append("--bf16")
    if device.type == "cpu":
        command.append("--use_cpu")
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    seconds = time.perf_counter() - start
    note = "" if result.returncode == 0 else result.stderr.strip().splitlines()[-1][:200]
    return common.row("gpu-3", f"examples/{script} 3 steps in {dtype_name(dtype)}", "-", seconds, None, None, "rc 0",
                      result.returncode == 0, unit="s", note=note)


# ------------------------------------------------------------------------------------------ 4-5. speed


def timed(function, device):
    def call():
        function()
        synchronize(device)
    return call


def peak_memory(step, device) -> float | None:
    """Peak allocated device memory (MiB) over three steps after one warm-up step (CUDA only)."""
    if device.type != "cuda":
        return None
    step()
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(3):
        step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def pretraining_speed(config, device, dtype, batch: int, repeats: int, warmup: int) -> list[dict]:
    from transformers import FlavaForPreTraining

    from commercemm_hf import CommerceMMForPreTraining
    from commercemm_hf.modeling.configuration_commercemm import IMAGE_TEXT_TASKS, PRETRAINING_TASKS

    sizes = batch_sizes(config)
    it_batch = to_device(common.image_text_batch(batch, 0, **sizes), device)
    om_batch = to_device(common.omni_batch(batch, 1, **{k: v for k, v in sizes.items() if k != "patch_size"}), device)
    flava_batch = to_device(common.flava_batch(batch, 0, **sizes), device)
    torch.manual_seed(0)
    ours = CommerceMMForPreTraining(config).to(device).train()
    image_text_only = CommerceMMForPreTraining(config.__class__.from_dict({
        **config.to_dict(), "loss_weights": {task: float(task in IMAGE_TEXT_TASKS) for task in PRETRAINING_TASKS}}))
    image_text_only = image_text_only.to(device).train()
    flava = FlavaForPreTraining(common.flava_config_like(config)).to(device).train()
    sides = {}
    for name, model, run in (
            ("commercemm_image_text", image_text_only, lambda m, o: common.commercemm_image_text_step(m, o, it_batch)),
            ("flava", flava, lambda m, o: common.flava_step(m, o, flava_batch)),
            ("commercemm_two_pass", ours, lambda m, o: common.commercemm_two_pass_step(m, o, it_batch, om_batch))):
        optimizer = common.optimizer_for(model)

        def step(model=model, optimizer=optimizer, run=run):
            with autocast(device, dtype):
                run(model, optimizer)
        sides[name] = (step, peak_memory(step, device))
    timings = common.compare({name: timed(step, device) for name, (step, _) in sides.items()}, repeats=repeats,
                             warmup=warmup, min_seconds=0.0)
    rate = common.rates(timings, batch)
    memory = {name: value for name, (_, value) in sides.items()}
    label = f"batch {batch}, {dtype_name(dtype)}"
    rows = [
        common.ratio_row("gpu-4", f"pretraining pairs/s vs FlavaForPreTraining ({label})", "-",
                         rate["commercemm_image_text"], rate["flava"], 1.5, "pairs/s",
                         note="image-text pass (MLM, MIM-kl, MIM-fr, ITC, ITM with hard negatives) vs FLAVA's losses"),
        common.row("gpu-4", f"14-task two-pass step pairs/s ({label})", "-", rate["commercemm_two_pass"], None, None,
                   unit="pairs/s", note="image-text + Omni batch per step"),
    ]
    if memory["flava"]:
        rows.append(common.ratio_row("gpu-4", f"peak training memory vs FLAVA ({label})", "-",
                                     memory["commercemm_image_text"], memory["flava"], 1.0, "MiB",
                                     higher_is_better=False,
                                     note=f"two-pass step: {memory['commercemm_two_pass']:.0f} MiB"))
    return rows


def tower_speed(config, device, dtype, batch: int, repeats: int, warmup: int) -> list[dict]:
    from transformers import CLIPModel

    from commercemm_hf import CommerceMMModel

    sizes = batch_sizes(config)
    inputs = to_device(dict(common.inference_inputs(batch), input_ids=common.text_ids(
        batch, sizes["text_tokens"], torch.Generator().manual_seed(0), sizes["vocab"])), device)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs["pixel_values"] = torch.randn(batch, 3, sizes["image_size"], sizes["image_size"], device=device)
    torch.manual_seed(0)
    ours = CommerceMMModel(config).to(device).eval()
    clip = CLIPModel._from_config(common.clip_config_like(config, sizes["text_tokens"]),
                                  attn_implementation="sdpa").to(device).eval()

    def embed(model, method, **kwargs):
        def call():
            with torch.inference_mode(), autocast(device, dtype):
                getattr(model, method)(**kwargs)
        return timed(call, device)

    text = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    image = dict(pixel_values=inputs["pixel_values"])
    timings = common.compare({
        "ours_text": embed(ours, "get_text_features", **text), "clip_text": embed(clip, "get_text_features", **text),
        "ours_image": embed(ours, "get_image_features", **image),
        "clip_image": embed(clip, "get_image_features", **image),
    }, repeats=repeats, warmup=warmup, min_seconds=0.0)
    rate = common.rates(timings, batch)
    label = f"batch {batch}, {dtype_name(dtype)}, sdpa"
    return [common.ratio_row("gpu-5", f"{tower} tower embeddings/s vs CLIPModel ({label})", "-", rate[f"ours_{tower}"],
                             rate[f"clip_{tower}"], 1.0, "emb/s") for tower in ("text", "image")]


# ------------------------------------------------------------------------------------------ main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke run of the same code)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps (the CPU smoke run)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="max relative bf16-vs-fp32 error per loss")
    parser.add_argument("--steps", type=int, default=30, help="pretraining steps per preset (section 2)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-examples", action="store_true", help="leave out section 3 (the example scripts)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device: run on a GPU machine, or pass --device cpu for the smoke run.")
    dtype = torch.bfloat16
    if args.quick:
        args.steps, args.repeats, args.warmup = min(args.steps, 3), min(args.repeats, 2), min(args.warmup, 1)
    presets = ("tiny",) if args.quick else ("tiny", "small")
    from commercemm_hf import CommerceMMConfig

    speed_config = common.commercemm_config() if args.quick else CommerceMMConfig.from_preset("base")
    speed_batch = 4 if args.quick else 64
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        for preset in presets:
            rows += first_step_agreement(preset, device, dtype, args.tolerance, batch=8)
            rows.append(pretraining_run(preset, device, dtype, args.steps, 4 if args.quick else 32, workdir))
        for script in () if args.skip_examples else ("run_pretraining.py", "run_categorization.py", "run_retrieval.py"):
            rows.append(example_run(script, device, dtype, workdir))
        rows += pretraining_speed(speed_config, device, dtype, speed_batch, args.repeats, args.warmup)
        rows += tower_speed(speed_config, device, dtype, speed_batch, args.repeats, args.warmup)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    args.quick, args.threads = bool(args.quick), [torch.get_num_threads()]
    common.write_results("gpu_check", f"GPU check on {name} ({'quick' if args.quick else 'full'})", rows, args,
                         extra={"device": name})
    failed = [item["metric"] for item in rows if item["met"] is False and item["target"] in ("gpu-1", "gpu-2", "gpu-3")]
    if failed:
        raise SystemExit("Failed checks: " + "; ".join(failed))


if __name__ == "__main__":
    main()
