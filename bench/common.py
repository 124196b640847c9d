"""Shared pieces of the CommerceMM benchmark suite (issue 5, DESIGN.md section 6).

* the matched architecture (hidden 256, 4 heads, FFN 1024, 4 image / 4 text / 2 multimodal layers, 128-px images with
  16-px patches, 32 text tokens, vocab 30522) as a `CommerceMMConfig`, a `FlavaConfig` and a `CLIPConfig`;
* synthetic batches for the image-text pass, the Omni pass and FLAVA's paired pretraining batch;
* `compare`: time several callables in the same run, alternating them, after warm-up, median of >= 10 repetitions;
* `peak_memory_child` / `measure_peak_memory`: peak RSS of one configuration in a fresh subprocess, minus that
  process's RSS right after its imports;
* flop counting that includes CPU SDPA (which `torch.utils.flop_counter` does not count by itself);
* the result table (printed) and its JSON file under `bench/results/`.

Every script runs with `--threads 1 2` (torch.set_num_threads per value), `--repeats N` and `--quick`.
"""

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path


BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
if str(BENCH_DIR.parent) not in sys.path:  # run from anywhere: the package is the repository's
    sys.path.insert(0, str(BENCH_DIR.parent))

warnings.filterwarnings("ignore")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


try:  # the demo catalog's `datasets.map` progress bars would drown the tables
    import datasets

    datasets.disable_progress_bars()
except ImportError:
    pass

# ----------------------------------------------------------------------------------------------------------------
# The matched architecture
# ----------------------------------------------------------------------------------------------------------------

HIDDEN, HEADS, FFN = 256, 4, 1024
IMAGE_LAYERS, TEXT_LAYERS, MULTIMODAL_LAYERS = 4, 4, 2
IMAGE_SIZE, PATCH_SIZE, TEXT_TOKENS, VOCAB = 128, 16, 32, 30522
TRAIN_BATCH, INFER_BATCH = 8, 32
NUM_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2
MASK_ID, CLS_ID, SEP_ID = 4, 2, 3  # the ids `train_commercemm_tokenizer` gives its special tokens

MATCHED = dict(hidden=HIDDEN, heads=HEADS, ffn=FFN, image_layers=IMAGE_LAYERS, text_layers=TEXT_LAYERS,
               multimodal_layers=MULTIMODAL_LAYERS, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
               text_tokens=TEXT_TOKENS, vocab=VOCAB, train_batch=TRAIN_BATCH, infer_batch=INFER_BATCH, dtype="float32")

_STACK = dict(hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=FFN, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)


def commercemm_config(**overrides):
    """The matched CommerceMM config (dropout 0 everywhere, like the FLAVA/CLIP peers' defaults)."""
    from commercemm_hf import CommerceMMConfig

    values = dict(
        text_config=dict(_STACK, num_hidden_layers=TEXT_LAYERS, vocab_size=VOCAB, max_position_embeddings=512),
        vision_config=dict(_STACK, num_hidden_layers=IMAGE_LAYERS, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        multimodal_config=dict(_STACK, num_hidden_layers=MULTIMODAL_LAYERS),
        projection_dim=HIDDEN,
        text_depth_choices=[TEXT_LAYERS // 2, TEXT_LAYERS],
        image_depth_choices=[IMAGE_LAYERS // 2, IMAGE_LAYERS],
        multimodal_depth_choices=[MULTIMODAL_LAYERS // 2, MULTIMODAL_LAYERS],
    )
    values.update(overrides)
    return CommerceMMConfig(**values)


def flava_config():
    from transformers import FlavaConfig

    return FlavaConfig(
        text_config=dict(_STACK, num_hidden_layers=TEXT_LAYERS, vocab_size=VOCAB, max_position_embeddings=512),
        image_config=dict(_STACK, num_hidden_layers=IMAGE_LAYERS, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        multimodal_config=dict(_STACK, num_hidden_layers=MULTIMODAL_LAYERS),
        hidden_size=HIDDEN, projection_dim=HIDDEN, init_codebook=False,  # the DALL-E codebook is not timed
    )


def clip_config():
    from transformers import CLIPConfig

    stack = dict(hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=FFN)
    return CLIPConfig(
        text_config=dict(stack, num_hidden_layers=TEXT_LAYERS, vocab_size=VOCAB, max_position_embeddings=TEXT_TOKENS),
        vision_config=dict(stack, num_hidden_layers=IMAGE_LAYERS, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        projection_dim=HIDDEN,
    )


def _stack_like(stack, dropout: bool = True) -> dict:
    values = dict(hidden_size=stack.hidden_size, num_attention_heads=stack.num_attention_heads,
                  intermediate_size=stack.intermediate_size, num_hidden_layers=stack.num_hidden_layers)
    return dict(values, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0) if dropout else values


def flava_config_like(config):
    """`FlavaConfig` at the architecture of a `CommerceMMConfig` (every stack's width, heads, FFN and depth, image and
    patch size, vocabulary, projection size), dropout 0."""
    from transformers import FlavaConfig

    text, vision = config.text_config, config.vision_config
    return FlavaConfig(
        text_config=dict(_stack_like(text), vocab_size=text.vocab_size, max_position_embeddings=512),
        image_config=dict(_stack_like(vision), image_size=vision.image_size, patch_size=vision.patch_size),
        multimodal_config=_stack_like(config.multimodal_config),
        hidden_size=config.multimodal_config.hidden_size, projection_dim=config.projection_dim, init_codebook=False,
    )


def clip_config_like(config, text_tokens: int = TEXT_TOKENS):
    """`CLIPConfig` with the text and image towers of a `CommerceMMConfig`."""
    from transformers import CLIPConfig

    text, vision = config.text_config, config.vision_config
    return CLIPConfig(
        text_config=dict(_stack_like(text, dropout=False), vocab_size=text.vocab_size,
                         max_position_embeddings=text_tokens),
        vision_config=dict(_stack_like(vision, dropout=False), image_size=vision.image_size,
                           patch_size=vision.patch_size),
        projection_dim=config.projection_dim,
    )


# ----------------------------------------------------------------------------------------------------------------
# Synthetic batches
# ----------------------------------------------------------------------------------------------------------------


def text_ids(batch, length=TEXT_TOKENS, generator=None, vocab=VOCAB):
    ids = torch.randint(5, vocab, (batch, length), generator=generator)
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    return ids


def mlm_mask(input_ids, generator=None, probability=0.15):
    """BERT masking of the non-special tokens (at least one per row): (masked ids, labels with -100 elsewhere)."""
    candidates = torch.zeros_like(input_ids, dtype=torch.bool)
    candidates[:, 1:-1] = True
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & candidates
    chosen[:, 1] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    masked = torch.where(chosen, torch.full_like(input_ids, MASK_ID), input_ids)
    return masked, labels


def patch_mask(batch, ratio=0.5, generator=None, num_patches=NUM_PATCHES):
    """Exactly `ratio` of the patches of each image masked, with CommerceMMPretrainingCollator's own function."""
    from commercemm_hf.training.collators import random_patch_mask

    return random_patch_mask(batch, num_patches, ratio, generator)


def image_text_batch(batch=TRAIN_BATCH, seed=0, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
                     text_tokens=TEXT_TOKENS, vocab=VOCAB):
    """A masked image-text batch for `CommerceMMForPreTraining` (the collator's output format); the sizes default to
    the matched architecture."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = text_ids(batch, text_tokens, generator, vocab)
    mlm_input_ids, mlm_labels = mlm_mask(input_ids, generator)
    return dict(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
        pixel_values=torch.randn(batch, 3, image_size, image_size, generator=generator),
        mlm_input_ids=mlm_input_ids, mlm_labels=mlm_labels,
        bool_masked_pos=patch_mask(batch, generator=generator, num_patches=(image_size // patch_size) ** 2),
    )


def omni_batch(batch=TRAIN_BATCH, seed=1, image_size=IMAGE_SIZE, text_tokens=TEXT_TOKENS, vocab=VOCAB):
    """An Omni batch of `batch` products whose sources mix queries (text), views (image) and tagged posts (both):
    with batch 8, rows 0-2 are queries, 3-5 views, 6-7 posts, so every one of the 9 Omni losses is present."""
    generator = torch.Generator().manual_seed(seed)
    queries, views = (3 * batch) // 8, (3 * batch) // 8
    posts = batch - queries - views
    text_rows = list(range(queries)) + list(range(queries + views, batch))
    image_rows = list(range(queries, batch))
    product_ids = text_ids(batch, text_tokens, generator, vocab)
    source_ids = text_ids(len(text_rows), text_tokens, generator, vocab)
    assert posts >= 1
    return dict(
        product_input_ids=product_ids, product_attention_mask=torch.ones_like(product_ids),
        product_pixel_values=torch.randn(batch, 3, image_size, image_size, generator=generator),
        product_index=torch.arange(batch) + 1000,
        source_input_ids=source_ids, source_attention_mask=torch.ones_like(source_ids),
        source_text_rows=torch.tensor(text_rows), source_image_rows=torch.tensor(image_rows),
        source_pixel_values=torch.randn(len(image_rows), 3, image_size, image_size, generator=generator),
    )


def flava_batch(batch=TRAIN_BATCH, seed=0, **sizes):
    """FLAVA's paired pretraining batch with the same texts, images and masks; `mim_labels` are precomputed codebook
    ids (so the DALL-E codebook is not timed) and half the pairs are ITM negatives (FLAVA takes them from the data)."""
    base = image_text_batch(batch, seed, **sizes)
    generator = torch.Generator().manual_seed(seed + 100)
    return dict(
        input_ids=base["input_ids"], input_ids_masked=base["mlm_input_ids"], attention_mask=base["attention_mask"],
        pixel_values=base["pixel_values"], bool_masked_pos=base["bool_masked_pos"], mlm_labels=base["mlm_labels"],
        mim_labels=torch.randint(0, 8192, tuple(base["bool_masked_pos"].shape), generator=generator),
        itm_labels=(torch.arange(batch) % 2 == 0).long(), return_loss=True,
    )


# ----------------------------------------------------------------------------------------------------------------
# Models and training steps
# ----------------------------------------------------------------------------------------------------------------


def inference_inputs(batch=INFER_BATCH, seed=0):
    """Texts of 32 tokens (no padding) and 128-px images, the same tensors for every model."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = text_ids(batch, generator=generator)
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                pixel_values=torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator))


def build_commercemm_model(seed=0, **overrides):
    from commercemm_hf import CommerceMMModel

    torch.manual_seed(seed)
    return CommerceMMModel(commercemm_config(**overrides)).eval()


def build_clip(seed=0):
    from transformers import CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel._from_config(clip_config(), attn_implementation="sdpa").eval()
    assert model.config._attn_implementation == "sdpa"
    return model


def build_flava_model(seed=0):
    from transformers import FlavaModel

    torch.manual_seed(seed)
    return FlavaModel(flava_config()).eval()


def compiled(function, enabled: bool):
    """`torch.compile(function)` when asked (measured as its own side, never assumed), else `function`."""
    return torch.compile(function, dynamic=False) if enabled else function


def build_commercemm_pretraining(tasks=None, seed=0, **overrides):
    """`CommerceMMForPreTraining` at the matched architecture; `tasks` keeps only those losses (loss weight 0 for the
    others, which is how the model skips a task)."""
    from commercemm_hf import CommerceMMForPreTraining
    from commercemm_hf.modeling.configuration_commercemm import PRETRAINING_TASKS

    config = commercemm_config(**overrides)
    if tasks is not None:
        config.loss_weights = {task: (1.0 if task in tasks else 0.0) for task in PRETRAINING_TASKS}
    torch.manual_seed(seed)
    return CommerceMMForPreTraining(config).train()


def build_flava_pretraining(seed=0):
    from transformers import FlavaForPreTraining

    torch.manual_seed(seed)
    return FlavaForPreTraining(flava_config()).train()


def optimizer_for(model):
    # fused AdamW: what `TrainingArguments` picks by default (optim="adamw_torch_fused"), i.e. what the trainer runs
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01,
                             fused=True)


def commercemm_image_text_step(model, optimizer, batch):
    """One optimizer step on the image-text pass (MLM, MIM-kl, MIM-fr, ITC, ITM) at full depth."""
    generator = torch.Generator().manual_seed(0)
    loss = model(**batch, generator=generator).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def commercemm_two_pass_step(model, optimizer, it_batch, om_batch):
    """One step of `CommerceMMPretrainingTrainer.training_step`: image-text pass + backward, Omni pass + backward,
    then one optimizer step (full depth: modality randomization would make the step cheaper, not comparable)."""
    generator = torch.Generator().manual_seed(0)
    model(**it_batch, generator=generator).loss.backward()
    model(**om_batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def flava_step(model, optimizer, batch):
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


# ----------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------


def set_threads(threads: int):
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for subprocesses started from here


def compare(functions: dict, repeats: int = 10, warmup: int = 2, min_seconds: float = 0.05) -> dict:
    """Time each callable in the same run: `warmup` calls of each, then `repeats` rounds in which every callable runs
    once (or `inner` times, chosen so a sample lasts >= `min_seconds`), alternating the order (ABAB.., BABA..) so
    drift hits every side alike. Returns per name the median seconds per call and the spread of the samples."""
    names = list(functions)
    for _ in range(warmup):
        for name in names:
            functions[name]()
    inner = {}
    for name in (names if min_seconds else ()):  # calibrate: one timed call
        start = time.perf_counter()
        functions[name]()
        once = time.perf_counter() - start
        inner[name] = max(1, math.ceil(min_seconds / max(once, 1e-9)))
    inner = {name: inner.get(name, 1) for name in names}
    samples = {name: [] for name in names}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_index in range(repeats):
            order = names if round_index % 2 == 0 else names[::-1]
            for name in order:
                function, count = functions[name], inner[name]
                start = time.perf_counter()
                for _ in range(count):
                    function()
                samples[name].append((time.perf_counter() - start) / count)
    finally:
        if gc_was_enabled:
            gc.enable()
    result = {}
    for name in names:
        values = sorted(samples[name])
        quartiles = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
        result[name] = {"median_s": statistics.median(values), "min_s": values[0], "max_s": values[-1],
                        "iqr_s": quartiles[2] - quartiles[0], "repeats": repeats, "calls_per_sample": inner[name]}
    return result


# ----------------------------------------------------------------------------------------------------------------
# Peak memory in a fresh process
# ----------------------------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    """Peak RSS of this process so far (VmHWM; the same as resource.getrusage ru_maxrss on Linux)."""
    return _status_kb("VmHWM") / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_memory_child(setup, step, steps: int = 3) -> dict:
    """Run in the fresh subprocess: RSS after imports (baseline), after `setup()` (model, optimizer, batch), and the
    peak over `steps` calls of `step(state)` (the first creates the optimizer state). Prints one JSON line."""
    gc.collect()
    baseline = rss_mb()
    state = setup()
    gc.collect()
    after_setup = rss_mb()
    step(state)  # first step: optimizer state and allocator pools appear
    gc.collect()
    after_first = rss_mb()
    peak_so_far = peak_rss_mb()
    resettable = reset_peak_rss()
    for _ in range(max(1, steps - 1)):
        step(state)
    peak_later = peak_rss_mb()
    result = {
        "baseline_rss_mb": baseline,
        "setup_mb": after_setup - baseline,
        "steady_mb": after_first - baseline,
        # the process's peak RSS (= ru_maxrss) above its post-import RSS: weights, gradients, optimizer state and
        # the activations and temporaries of a step
        "peak_mb": max(peak_so_far, peak_later) - baseline,
        # peak above the steady state during steps 2..n: what one step's activations and temporaries add
        "step_transient_mb": (peak_later - after_first) if resettable else float("nan"),
    }
    print("MEMORY_JSON " + json.dumps(result), flush=True)
    return result


def measure_peak_memory(script: str, config_name: str, threads: int, extra_args=()) -> dict:
    """Start `script --memory-child config_name --threads N` in a fresh interpreter and read its JSON line."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, script, "--memory-child", config_name, "--threads", str(threads), *extra_args]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    for line in completed.stdout.splitlines():
        if line.startswith("MEMORY_JSON "):
            return json.loads(line[len("MEMORY_JSON "):])
    raise RuntimeError(f"memory child {config_name} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")


# ----------------------------------------------------------------------------------------------------------------
# FLOPs (torch.utils.flop_counter, plus CPU SDPA)
# ----------------------------------------------------------------------------------------------------------------


def flop_counter():
    """A FlopCounterMode that also counts `aten._scaled_dot_product_flash_attention_for_cpu` (+ backward), the CPU
    SDPA kernel, which torch's counter leaves out (it registers only the CUDA kernels)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = forward
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = backward
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_flops(function) -> int:
    with flop_counter() as counter:
        function()
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------------------------------------------
# Command line, table, JSON
# ----------------------------------------------------------------------------------------------------------------


def parser(description: str, repeats: int = 10) -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to report")
    result.add_argument("--repeats", type=int, default=repeats, help="timed rounds per comparison (median)")
    result.add_argument("--warmup", type=int, default=2, help="untimed calls of each side first")
    result.add_argument("--quick", action="store_true", help="smoke mode: 3 repeats, fewer configurations")
    result.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    result.add_argument("--output", default=None, help="JSON path (default bench/results/<name>.json)")
    result.add_argument("--compile", action="store_true", help="also measure torch.compile'd CommerceMM sides")
    result.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return result


def finish_args(args):
    if args.quick:
        args.repeats = min(args.repeats, 3)
        args.warmup = min(args.warmup, 1)
    return args


def row(target: str, metric: str, threads, ours: float, peer: float | None, ratio: float | None,
        goal: str | None = None, met: bool | None = None, unit: str = "", note: str = "") -> dict:
    return {"target": target, "metric": metric, "threads": threads, "ours": ours, "peer": peer, "ratio": ratio,
            "goal": goal, "met": met, "unit": unit, "note": note}


def ratio_row(target: str, metric: str, threads, ours: float, peer: float, goal: float | None, unit: str,
              higher_is_better: bool = True, note: str = "") -> dict:
    """A row whose ratio is ours/peer (rates) or peer/ours (times, memory: `higher_is_better=False` means the goal is
    ours <= goal x peer), with the goal checked on the measured ratio."""
    ratio = ours / peer if peer else float("nan")
    if goal is None:
        return row(target, metric, threads, ours, peer, ratio, None, None, unit, note)
    met = ratio >= goal if higher_is_better else ratio <= goal
    return row(target, metric, threads, ours, peer, ratio, (">=" if higher_is_better else "<=") + f"{goal:g}x", met,
               unit, note)


def rates(timings: dict, items: int) -> dict:
    """Items per second of each side of a `compare` result (from the median time)."""
    return {name: items / timing["median_s"] for name, timing in timings.items()}


def _fmt(value, width=10):
    if value is None:
        return " " * (width - 1) + "-"
    if isinstance(value, float):
        if math.isnan(value):
            return f"{'nan':>{width}s}"
        text = f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
        return f"{text:>{width}s}"
    return f"{str(value):>{width}s}"


def format_table(title: str, rows: list[dict]) -> str:
    header = (f"{'target':8s} {'metric':58s} {'thr':>3s} {'ours':>10s} {'peer':>10s} {'ratio':>8s} {'goal':>9s} "
              f"{'met':>8s}")
    lines = [title, header, "-" * len(header)]
    for item in rows:
        met = "" if item["met"] is None else ("met" if item["met"] else "NOT MET")
        ratio = "" if item["ratio"] is None else f"{item['ratio']:.3f}"
        metric = item["metric"] + (f" [{item['unit']}]" if item["unit"] else "")
        lines.append(f"{item['target']:8s} {metric[:58]:58s} {str(item['threads']):>3s} {_fmt(item['ours'])} "
                     f"{_fmt(item['peer'])} {ratio:>8s} {(item['goal'] or ''):>9s} {met:>8s}")
        if item.get("note"):
            lines.append(f"{'':8s}   note: {item['note']}")
    return "\n".join(lines)


def environment() -> dict:
    import transformers

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": _cpu_model(),
            "load_average_at_start": load, "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_results(name: str, title: str, rows: list[dict], args, extra: dict | None = None,
                  extra_tables: list[str] = ()) -> Path:
    """Print the rows as a table (plus any `extra_tables`) and write everything to bench/results/<name>.json."""
    table = "\n\n".join([format_table(title, rows), *extra_tables])
    print("\n" + table + "\n", flush=True)
    path = Path(args.output) if args.output else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "title": title, "quick": bool(args.quick), "repeats": args.repeats,
               "threads": args.threads, "matched_architecture": MATCHED, "environment": environment(),
               "rows": rows, "table": table, **(extra or {})}
    path.write_text(json.dumps(payload, indent=2, default=float))
    print(f"wrote {path}", flush=True)
    return path
