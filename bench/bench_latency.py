"""Serving latency (issue 17): P50 / P99 of one 16-token query's text embedding at batch 1 on 1 thread, and product
(image + text, fused) embeddings/s at batch 32, for the `tiny` and `small` presets (random weights: speed does not
depend on them).

Sides, all in one process, timed in the same run, interleaved in blocks so that the machine's load drifts over every
side alike:
- `eager`: `get_text_features(...).pooler_output` in PyTorch fp32 (`torch.set_num_threads(1)`, `no_grad`);
- `onnx`: the same module exported by `commercemm_hf.export.export_graph` (what `commercemm export` runs: dynamo
  `torch.onnx.export`, dynamic batch and sequence axes), run by `commercemm_hf.export.session(path, threads=1)`
  (ONNX Runtime, `intra_op_num_threads=1`, every graph optimisation);
- `onnx-int8`: that graph through `commercemm_hf.export.quantize_int8` (ONNX Runtime dynamic quantisation);
- `clip-onnx` / `clip-onnx-int8` (and `clip-eager`, info): transformers' `CLIPTextModelWithProjection` at the matched
  size (hidden size, layers, heads, FFN, vocabulary, projection size, positions), exported and quantised by the same
  two functions.

Every exported graph is checked against its eager module on the timed input (cosine printed). The query is one
unpadded 16-token row (what a search box sends); the product batch is 32 rows of 32 title tokens and one image each.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_latency.py                 # tiny and small, 400 timed calls each
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_latency.py --quick         # smoke run: tiny only, 50 calls

Targets: the small preset's int8 query P99 <= 1.5 ms; exported paths >= 2x eager at batch 1; never slower than the
CLIP text tower exported the same way.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import common  # noqa: E402  (puts the repository on sys.path, quiets warnings)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from commercemm_hf.export import MultimodalEmbedding, TextEmbedding  # noqa: E402


# the exporter warns once per graph that torchvision (never installed here) has no ops to register
logging.getLogger("torch.onnx").setLevel(logging.ERROR)

QUERY_TOKENS, TITLE_TOKENS, PRODUCT_BATCH = 16, 32, 32
P99_TARGET_MS, SPEEDUP_TARGET = 1.5, 2.0


class ClipTextEmbedding(TextEmbedding):
    """`CLIPTextModelWithProjection(...).text_embeds`, with the input / output names of our text graph (what
    `export_graph` reads)."""

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).text_embeds


def clip_text_like(config) -> nn.Module:
    """`CLIPTextModelWithProjection` at the size of a CommerceMM config's text tower, random weights."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    text = config.text_config
    clip = CLIPTextConfig(hidden_size=text.hidden_size, num_hidden_layers=text.num_hidden_layers,
                          num_attention_heads=text.num_attention_heads, intermediate_size=text.intermediate_size,
                          vocab_size=text.vocab_size, max_position_embeddings=text.max_text_length,
                          projection_dim=config.projection_dim, attn_implementation="sdpa")
    return ClipTextEmbedding(CLIPTextModelWithProjection(clip).eval())


def text_example(vocab: int, batch: int, length: int, seed: int, padded: bool) -> dict:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    if padded:  # the export example is padded, so the graph keeps the masked branch
        mask[1:, length // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def export_sides(module, example: dict, folder: Path, name: str, max_length: int) -> dict:
    """fp32 and int8 ONNX files of `module`, through the functions `commercemm export` uses."""
    from commercemm_hf.export import export_graph, quantize_int8

    fp32, int8 = folder / f"{name}.onnx", folder / f"{name}_int8.onnx"
    started = time.perf_counter()
    export_graph(module, example, fp32, max_length)
    quantize_int8(fp32, int8)
    print(f"  exported {name} (fp32 + int8) in {time.perf_counter() - started:.1f} s", flush=True)
    return {"onnx": fp32, "onnx-int8": int8}


def onnx_call(path: Path, feed: dict):
    from commercemm_hf.export import session

    runner = session(path, threads=1)
    arrays = {key: value.numpy() for key, value in feed.items()}
    return lambda: runner.run(None, arrays)[0]


def eager_call(module, feed: dict):
    def call():
        with torch.no_grad():
            return module(**feed).numpy()
    return call


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


def time_calls(calls: dict, iterations: int, warmup: int, block: int = 10) -> dict:
    """Wall and CPU seconds of every single call of each side: `warmup` untimed calls, then blocks of `block` calls
    per side in rotating order until each side has `iterations` samples.

    CPU time (`time.process_time_ns`: every thread of this process; with 1 torch thread and `intra_op_num_threads=1`
    the call runs on the calling thread) is what the call costs on a core of its own: on a shared machine the wall
    time also counts the time the process waits for a core."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples = {name: ([], []) for name in calls}
    names, turn = list(calls), 0
    while min(len(wall) for wall, _ in samples.values()) < iterations:
        order = names[turn % len(names):] + names[:turn % len(names)]
        for name in order:
            call, (wall, cpu) = calls[name], samples[name]
            for _ in range(block):
                start, start_cpu = time.perf_counter_ns(), time.process_time_ns()
                call()
                cpu.append((time.process_time_ns() - start_cpu) / 1e9)
                wall.append((time.perf_counter_ns() - start) / 1e9)
        turn += 1
    return {name: {"wall": np.asarray(wall[:iterations]), "cpu": np.asarray(cpu[:iterations])}
            for name, (wall, cpu) in samples.items()}


def latency_row(times: dict) -> dict:
    row = {"calls": int(times["wall"].size)}
    for clock, prefix in (("wall", ""), ("cpu", "cpu_")):
        for percentile in (50, 99):
            row[f"{prefix}p{percentile}_ms"] = float(np.percentile(times[clock], percentile) * 1e3)
    return row


def bench_preset(preset: str, args, scratch: Path) -> dict:
    from commercemm_hf import CommerceMMConfig, CommerceMMModel

    print(f"\n== preset {preset}", flush=True)
    torch.manual_seed(0)
    config = CommerceMMConfig.from_preset(preset)
    model = CommerceMMModel(config).eval()
    text_module, product_module = TextEmbedding(model).eval(), MultimodalEmbedding(model).eval()
    clip_module = clip_text_like(config)
    vocab, max_length = config.text_config.vocab_size, config.text_config.max_text_length
    folder = scratch / preset
    folder.mkdir()

    # --- query latency, batch 1
    export_example = text_example(vocab, 2, QUERY_TOKENS, seed=1, padded=True)
    query = text_example(vocab, 1, QUERY_TOKENS, seed=2, padded=False)
    ours = export_sides(text_module, export_example, folder, "text", max_length)
    clip = export_sides(clip_module, export_example, folder, "clip_text", max_length)
    calls = {"eager": eager_call(text_module, query), "onnx": onnx_call(ours["onnx"], query),
             "onnx-int8": onnx_call(ours["onnx-int8"], query), "clip-eager": eager_call(clip_module, query),
             "clip-onnx": onnx_call(clip["onnx"], query), "clip-onnx-int8": onnx_call(clip["onnx-int8"], query)}
    checks = {name: cosine(calls[name](), calls["clip-eager" if name.startswith("clip") else "eager"]())
              for name in calls if "onnx" in name}
    times = time_calls(calls, args.iterations, args.warmup)
    query_rows = {name: latency_row(values) for name, values in times.items()}

    # --- product embeddings/s, batch 32 (32 title tokens + one image per row)
    size = config.vision_config.image_size
    product = dict(text_example(vocab, PRODUCT_BATCH, TITLE_TOKENS, seed=3, padded=False),
                   pixel_values=torch.randn(PRODUCT_BATCH, 3, size, size, generator=torch.Generator().manual_seed(4)))
    product_export = dict(text_example(vocab, 2, TITLE_TOKENS, seed=5, padded=True),
                          pixel_values=torch.randn(2, 3, size, size))
    product_files = export_sides(product_module, product_export, folder, "multimodal", max_length)
    product_calls = {"eager": eager_call(product_module, product),
                     "onnx": onnx_call(product_files["onnx"], product),
                     "onnx-int8": onnx_call(product_files["onnx-int8"], product)}
    checks.update({f"product-{name}": cosine(product_calls[name](), product_calls["eager"]())
                   for name in ("onnx", "onnx-int8")})
    product_times = time_calls(product_calls, args.product_iterations, 1, block=1)
    product_rows = {}
    for name, values in product_times.items():
        wall, cpu = float(np.median(values["wall"])), float(np.median(values["cpu"]))
        product_rows[name] = {"median_s": wall, "cpu_median_s": cpu, "per_s": PRODUCT_BATCH / wall,
                              "cpu_per_s": PRODUCT_BATCH / cpu, "calls": int(values["wall"].size)}
    print("  cosine vs eager: " + ", ".join(f"{name} {value:.6f}" for name, value in checks.items()), flush=True)
    return {"query": query_rows, "product": product_rows, "checks": checks,
            "sizes_mb": {f"{kind}:{name}": round(path.stat().st_size / 2**20, 2)
                         for kind, files in (("text", ours), ("clip_text", clip), ("multimodal", product_files))
                         for name, path in files.items()}}


#: the CLIP side each of ours is compared with: the same path and precision
CLIP_PEER = {"eager": "clip-eager", "onnx": "clip-onnx", "onnx-int8": "clip-onnx-int8"}


def format_tables(results: dict, uptime_start: str, uptime_end: str) -> str:
    lines = [f"uptime at start: {uptime_start}", f"uptime at end:   {uptime_end}", "",
             f"query text embedding, batch 1, {QUERY_TOKENS} tokens, 1 thread: ms per call, wall clock and CPU time "
             "(process_time); speed-ups wall / CPU",
             "'vs CLIP': CLIP's text tower on the same path and precision (> 1x: ours is faster)",
             f"{'preset':6s} {'side':15s} {'P50':>7s} {'P99':>7s} {'CPU P50':>8s} {'CPU P99':>8s} "
             f"{'vs eager P50':>13s} {'vs eager P99':>13s} {'vs CLIP P50':>12s} {'vs CLIP P99':>12s}"]
    lines.append("-" * len(lines[-1]))

    def ratio(base: dict, value: dict, key: str) -> str:
        return f"{base[key] / value[key]:.2f}/{base['cpu_' + key] / value['cpu_' + key]:.2f}x"

    for preset, result in results.items():
        rows = result["query"]
        for name, values in rows.items():
            eager = rows["clip-eager" if name.startswith("clip") else "eager"]
            peer = rows.get(CLIP_PEER.get(name, ""))
            cells = [ratio(eager, values, "p50_ms"), ratio(eager, values, "p99_ms")]
            cells += [ratio(peer, values, "p50_ms"), ratio(peer, values, "p99_ms")] if peer else ["-", "-"]
            lines.append(f"{preset:6s} {name:15s} {values['p50_ms']:7.3f} {values['p99_ms']:7.3f} "
                         f"{values['cpu_p50_ms']:8.3f} {values['cpu_p99_ms']:8.3f} {cells[0]:>13s} {cells[1]:>13s} "
                         f"{cells[2]:>12s} {cells[3]:>12s}")
    lines += ["", f"product (image + text, fused) embeddings, batch {PRODUCT_BATCH}, {TITLE_TOKENS} title tokens, "
                  "1 thread (median; wall clock and CPU time)",
              f"{'preset':6s} {'side':15s} {'emb/s':>8s} {'CPU emb/s':>10s} {'s/batch':>8s} {'vs eager':>13s}"]
    lines.append("-" * len(lines[-1]))
    for preset, result in results.items():
        rows = result["product"]
        for name, values in rows.items():
            speedup = (f"{values['per_s'] / rows['eager']['per_s']:.2f}/"
                       f"{values['cpu_per_s'] / rows['eager']['cpu_per_s']:.2f}x")
            lines.append(f"{preset:6s} {name:15s} {values['per_s']:8.1f} {values['cpu_per_s']:10.1f} "
                         f"{values['median_s']:8.3f} {speedup:>13s}")
    lines += ["", "targets (wall clock / CPU time)"]

    def verdict(met_wall: bool, met_cpu: bool) -> str:
        return {(True, True): "met", (False, True): "met in CPU time, not in wall time",
                (True, False): "met in wall time only", (False, False): "NOT MET"}[(met_wall, met_cpu)]

    for preset, result in results.items():
        rows = result["query"]
        if preset == "small":
            p99, cpu_p99 = rows["onnx-int8"]["p99_ms"], rows["onnx-int8"]["cpu_p99_ms"]
            lines.append(f"small int8 query P99 <= {P99_TARGET_MS} ms: {p99:.3f} / {cpu_p99:.3f} ms: "
                         + verdict(p99 <= P99_TARGET_MS, cpu_p99 <= P99_TARGET_MS))
        for name in ("onnx", "onnx-int8"):
            speed = [rows["eager"][key] / rows[name][key] for key in ("p50_ms", "cpu_p50_ms")]
            peer = CLIP_PEER[name]
            vs_clip = [min(rows[peer][key] / rows[name][key] for key in (f"{prefix}p50_ms", f"{prefix}p99_ms"))
                       for prefix in ("", "cpu_")]
            lines.append(f"{preset} {name}: {speed[0]:.2f} / {speed[1]:.2f}x eager at P50 (>= {SPEEDUP_TARGET}x: "
                         f"{verdict(*(value >= SPEEDUP_TARGET for value in speed))}); worst of P50 and P99 "
                         f"{vs_clip[0]:.2f} / {vs_clip[1]:.2f}x {peer} (>= 1x: "
                         f"{verdict(*(value >= 1 for value in vs_clip))})")
    lines += ["", "cosine of each exported graph with its eager module on the timed inputs (minimum over rows)"]
    for preset, result in results.items():
        lines.append(f"{preset}: " + ", ".join(f"{name} {value:.6f}" for name, value in result["checks"].items()))
    return "\n".join(lines)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--iterations", type=int, default=400, help="timed batch-1 calls per side (after warm-up)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--product-iterations", type=int, default=10, help="timed batch-32 calls per side")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny only, 50 calls")
    parser.add_argument("--output", default=str(common.RESULTS_DIR / "latency.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.presets, args.iterations, args.warmup, args.product_iterations = ["tiny"], 50, 5, 2
    common.set_threads(1)
    start_uptime, started = uptime(), time.time()
    print(f"uptime: {start_uptime}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        results = {preset: bench_preset(preset, args, Path(scratch)) for preset in args.presets}
    end_uptime = uptime()
    table = format_tables(results, start_uptime, end_uptime)
    print("\n" + table + "\n", flush=True)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"benchmark": "latency", "quick": args.quick, "iterations": args.iterations,
                                  "environment": common.environment(), "uptime_start": start_uptime,
                                  "uptime_end": end_uptime, "seconds": round(time.time() - started, 1),
                                  "results": results, "table": table}, indent=2))
    print(f"wrote {output}", flush=True)


if __name__ == "__main__":
    main()
