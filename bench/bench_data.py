"""Data at catalog scale (issue 15): a streamed pretraining run on a 1M-row manifest against the eager path.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_data.py                  # 1M rows: 15 GB in /tmp, ~15 min
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_data.py --rows 100000 --quick

The data is SYNTHETIC and written under `--work` (default /tmp/commercemm-bench-data, reused when present): N real
JPEG files (PIL, 256x256, default 2,000), and manifests whose rows point at them in turn (row i -> image i mod N):
image-text rows (`image`, `text`, `product_id`) and Omni rows (`source_type`, `source_text`, `source_image`,
`product_id`, `image`, `text`; queries, views and posts in turn), each as one JSON Lines file, as a glob of JSON
Lines shards (10k rows each) and, for the image-text stream, as Parquet shards with the JPEG bytes embedded.

Every measurement runs in a fresh interpreter (so its peak RSS is its own) on the public path a user takes:
`load_image_text_dataset` / `load_omni_dataset` (with `streaming=True`, or without: the eager path), the tiny
preset, `CommerceMMPretrainingTrainer` (its collators and data loaders) for one step:

* first step s: wall seconds from the interpreter's start (imports included) to the end of the first optimizer
  step; load s: the two `load_*` calls alone; peak MB: VmHWM at that point above the RSS after the imports;
* loader rows/s: image-text rows per second out of `trainer.get_train_dataloader()` (reading, the lazy check,
  JPEG decoding and collation), `--batches` batches after the first, with `dataloader_num_workers` 0 and 2;
* check CPU ms/row: process CPU time (user + system, workers included) per row of reading and checking only
  (no collation, no training decode), on rows that each have their own image (the first N rows), on 1024-px
  images, and on the 20k-row baseline, where the eager path checks each of the N paths once and reuses the result;
  a check's own CPU is that above reading the same rows on the same path without a check (`image_check="none"`
  here: the reader alone).
"""

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


STARTED = time.perf_counter()
BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR.parent) not in sys.path:  # run from anywhere: the package is the repository's
    sys.path.insert(0, str(BENCH_DIR.parent))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("red blue green black white ceramic cotton steel oak glass mug shirt lamp chair table vase bowl sofa "
         "jacket boot kettle plate towel pillow rug desk shelf bottle candle clock").split()
SHARD_ROWS = 10_000


# ----------------------------------------------------------------------------------------------------------------
# The synthetic data (written once under --work)
# ----------------------------------------------------------------------------------------------------------------


def _text(i: int) -> str:
    return " ".join(WORDS[(i * k + k * k) % len(WORDS)] for k in (1, 3, 7, 11))


def _image_text_row(i: int, images: int) -> dict:
    return {"image": f"images/{i % images:06d}.jpg", "text": _text(i), "product_id": f"p{i // 2}"}


def _omni_row(i: int, images: int) -> dict:
    kind = ("query", "view", "post")[i % 3]
    return {"source_type": kind, "source_text": _text(i + 1) if kind != "view" else None,
            "source_image": f"images/{(i + 7) % images:06d}.jpg" if kind != "query" else None,
            "product_id": f"p{i // 2}", "image": f"images/{i % images:06d}.jpg", "text": _text(i)}


def write_images(folder: Path, count: int, size: int = 256) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    for i in range(count):
        path = folder / f"{i:06d}.jpg"
        if path.exists():
            continue
        a, b, c = rng.uniform(0.01, 0.08, 3)
        pixels = np.stack([np.sin(a * x + i) , np.cos(b * y - i), np.sin(c * (x + y))], -1) * 110 + 128
        pixels += rng.normal(0, 6, pixels.shape)  # texture, so the files have a catalog photo's entropy
        Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(path, quality=85)


def write_jsonl(path: Path, rows, start: int, stop: int, images: int) -> None:
    if path.exists():
        return
    staging = path.with_suffix(".tmp")
    with open(staging, "w") as handle:
        for begin in range(start, stop, 50_000):
            handle.write("".join(json.dumps(rows(i, images)) + "\n" for i in range(begin, min(stop, begin + 50_000))))
    staging.replace(path)


def write_parquet_shards(folder: Path, rows: int, images: int, image_folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    data = [(image_folder / f"{i:06d}.jpg").read_bytes() for i in range(images)]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    # datasets reads the struct as an Image() feature from the schema metadata it writes itself
    metadata = {b"huggingface": json.dumps({"info": {"features": {
        "image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"},
        "product_id": {"dtype": "string", "_type": "Value"}}}}).encode()}
    for shard, begin in enumerate(range(0, rows, SHARD_ROWS)):
        path = folder / f"part-{shard:05d}.parquet"
        if path.exists():
            continue
        indices = range(begin, min(rows, begin + SHARD_ROWS))
        table = pa.table({
            "image": pa.array([{"bytes": data[i % images], "path": f"{i % images:06d}.jpg"} for i in indices],
                              image_type),
            "text": pa.array([_text(i) for i in indices]), "product_id": pa.array([f"p{i // 2}" for i in indices]),
        }).replace_schema_metadata(metadata)
        pq.write_table(table, path.with_suffix(".tmp"), row_group_size=1000)
        path.with_suffix(".tmp").replace(path)


def prepare(work: Path, args) -> dict:
    """Write what is missing; return the sources by name."""
    started = time.perf_counter()
    write_images(work / "images", args.images)
    # the check's cost depends on the image size: catalog photos are often ~1000 px, where a decode costs more
    large = args.check_image_size
    write_images(work / f"images_{large}", args.check_images, large)
    sources = {f"large {large}": str(work / f"image_text_{large}px.jsonl")}
    write_jsonl(Path(sources[f"large {large}"]), lambda i, n: {**_image_text_row(i, n),
                                                               "image": f"images_{large}/{i:06d}.jpg"},
                0, args.check_images, args.check_images)
    for rows in sorted({args.rows, args.small_rows, args.eager_rows, args.images}):
        for kind, maker in (("image_text", _image_text_row), ("omni", _omni_row)):
            path = work / f"{kind}_{rows}.jsonl"
            write_jsonl(path, maker, 0, rows, args.images)
            sources[f"{kind} jsonl {rows}"] = str(path)
    for rows in sorted({args.rows, args.small_rows}):
        for kind, maker in (("image_text", _image_text_row), ("omni", _omni_row)):
            # shards beside the images' folder: relative image paths start from the shards' folder
            for shard, begin in enumerate(range(0, rows, SHARD_ROWS)):
                write_jsonl(work / f"{kind}_{rows}-part-{shard:05d}.jsonl", maker, begin,
                            min(rows, begin + SHARD_ROWS), args.images)
            sources[f"{kind} shards {rows}"] = str(work / f"{kind}_{rows}-part-*.jsonl")
    for rows in sorted({args.parquet_rows, min(args.small_rows, args.parquet_rows)}):
        write_parquet_shards(work / f"image_text_{rows}_parquet", rows, args.images, work / "images")
        sources[f"image_text parquet {rows}"] = str(work / f"image_text_{rows}_parquet" / "part-*.parquet")
    print(f"data ready under {work} in {time.perf_counter() - started:.0f} s "
          f"({sum(f.stat().st_size for f in work.rglob('*') if f.is_file()) / 1e9:.2f} GB)", flush=True)
    return sources


# ----------------------------------------------------------------------------------------------------------------
# Children (one fresh interpreter per measurement)
# ----------------------------------------------------------------------------------------------------------------


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _loaders():
    import warnings

    from commercemm_hf.data import load_image_text_dataset, load_omni_dataset

    warnings.filterwarnings("ignore")
    return load_image_text_dataset, load_omni_dataset


def child_check(args) -> dict:
    """Read and check rows only (no collation): CPU seconds per row."""
    import datasets

    load_image_text_dataset, _ = _loaders()
    options = dict(streaming=args.streaming, image_check=args.image_check, product_id_column="product_id",
                   cache_dir=str(Path(args.work) / "hf-cache"))
    if not args.streaming and not args.cached:
        options["load_from_cache_file"] = False  # the check itself, as it ran at every load before the cache
    if args.cached:  # the check's cache written first: the second load is timed
        load_image_text_dataset(args.source, **options)
    baseline, cpu = _status_mb("VmRSS"), _cpu_seconds()
    started = time.perf_counter()
    if args.image_check == "none":  # the reading alone (the same reader, no check): what every check adds to
        from commercemm_hf.data.shards import as_stream
        from commercemm_hf.data.sources import read_source

        rows, _, _ = read_source(args.source, None, {}, {"text", "product_id"}, args.streaming)
        rows, kept = (as_stream(rows, None) if args.streaming else rows), None
    else:
        rows, kept = load_image_text_dataset(args.source, **options)
    image = (rows.features or {}).get("image")
    if args.streaming and isinstance(image, datasets.Image) and image.decode:  # the check only, not training's decode
        rows = rows.cast_column("image", datasets.Image(decode=False))
    count = sum(1 for _ in itertools.islice(rows, args.limit)) if args.streaming else len(rows)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    return {"rows": count, "seconds": seconds, "cpu_ms_per_row": 1000 * cpu / count,
            "kept": kept.num_kept if kept is not None else count, "peak_mb": _status_mb("VmHWM") - baseline}


def child_train(args) -> dict:
    """Load both streams, build the tiny preset, run one step of the pretraining trainer, then time its loader."""
    import torch
    from transformers import TrainerCallback, TrainingArguments

    from commercemm_hf import (
        CommerceMMConfig,
        CommerceMMForPreTraining,
        CommerceMMImageProcessor,
        CommerceMMProcessor,
        train_commercemm_tokenizer,
    )
    from commercemm_hf.training.trainer import CommerceMMPretrainingTrainer

    load_image_text_dataset, load_omni_dataset = _loaders()
    torch.set_num_threads(1)
    imported = time.perf_counter()
    baseline, cpu = _status_mb("VmRSS"), _cpu_seconds()
    # the eager path as it was before its check was cached: checked at every load
    options = {} if args.streaming else {"load_from_cache_file": False}
    rows, _ = load_image_text_dataset(args.source, streaming=args.streaming, product_id_column="product_id", **options)
    omni, _ = load_omni_dataset(args.omni, streaming=args.streaming, **options)
    loaded, load_cpu = time.perf_counter(), _cpu_seconds() - cpu
    load_peak = _status_mb("VmHWM") - baseline
    tokenizer = train_commercemm_tokenizer([" ".join(WORDS)] * 10, vocab_size=200, model_max_length=32)
    config = CommerceMMConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)})
    size = config.vision_config.image_size
    processor = CommerceMMProcessor(
        CommerceMMImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}), tokenizer)
    torch.manual_seed(0)
    model = CommerceMMForPreTraining(config)
    marks = {}

    class FirstStep(TrainerCallback):
        def on_step_begin(self, *_, **__):
            marks.setdefault("begin", time.perf_counter())

        def on_step_end(self, *_, **__):
            marks.setdefault("end", time.perf_counter())
            marks.setdefault("cpu", _cpu_seconds())  # this process since its start: a shared machine inflates wall
            marks.setdefault("peak_mb", _status_mb("VmHWM") - baseline)

    training = TrainingArguments(str(Path(args.work) / f"run-{os.getpid()}"), max_steps=1, save_strategy="no",
                                 per_device_train_batch_size=args.batch_size, report_to=[], disable_tqdm=True,
                                 dataloader_num_workers=args.workers, logging_steps=1, use_cpu=True)
    trainer = CommerceMMPretrainingTrainer(model=model, args=training, train_dataset=rows, omni_dataset=omni,
                                           processor=processor, callbacks=[FirstStep()])
    trainer.train()
    result = {"first_step_s": marks["end"] - STARTED, "first_step_cpu_s": marks["cpu"], "import_s": imported - STARTED,
              "load_s": loaded - imported,
              "load_cpu_s": load_cpu, "load_peak_mb": load_peak, "step_s": marks["end"] - marks["begin"],
              "peak_mb": marks["peak_mb"]}
    # the loader alone: what feeds the trainer, after its first batch (workers started, shuffle buffer filled)
    batches = iter(trainer.get_train_dataloader())
    next(batches)
    started = time.perf_counter()
    count = sum(len(batch["input_ids"]) for batch in itertools.islice(batches, args.batches))
    result["loader_rows_per_s"] = count / (time.perf_counter() - started)
    result["peak_after_loader_mb"] = _status_mb("VmHWM") - baseline
    return result


def run_child(kind: str, timeout: int = 1800, **options) -> dict:
    command = [sys.executable, __file__, "--child", kind]
    for key, value in options.items():
        if value is True:
            command.append(f"--{key.replace('_', '-')}")
        elif value is not False and value is not None:
            command += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT_JSON "):
            return json.loads(line[len("RESULT_JSON "):])
    raise RuntimeError(f"child {kind} {options} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")


# ----------------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------------


def _f(value, digits=1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


#: below this, a check's CPU above reading its rows is not told apart from noise
NOISE_MS = 0.005


def render(results: list, checks: list, uptimes: list) -> str:
    """The two Markdown tables of a run (also `--render results.json`)."""
    lines = [f"uptime at start: {uptimes[0]}", f"uptime at end:   {uptimes[1]}", ""]
    if results:
        base = results[0]
        lines += ["| run | rows | workers | first step s (CPU s) | load s | step s | peak MB | loader rows/s | "
                  "first step vs eager | peak MB vs eager |", "|---|---|---|---|---|---|---|---|---|---|"]
        for item in results:
            lines.append(f"| {item['run']} | {item['rows']:,} | {item['workers']} | "
                         f"{_f(item['first_step_s'])} ({_f(item['first_step_cpu_s'])}) | "
                         f"{_f(item['load_s'])} | {_f(item['step_s'], 2)} | {_f(item['peak_mb'], 0)} | "
                         f"{_f(item['loader_rows_per_s'], 0)} | {item['first_step_s'] / base['first_step_s']:.2f}x | "
                         f"{item['peak_mb'] / base['peak_mb']:.2f}x |")
    # a check's own CPU: its rows' CPU above reading the same rows on the same path without a check; each check
    # against the full decode check of the same rows on the same path
    reading = {(item["source"], item["streaming"]): item["cpu_ms_per_row"] for item in checks
               if item["image_check"] == "none"}
    own = {id(item): item["cpu_ms_per_row"] - reading[item["source"], item["streaming"]] for item in checks}
    full = {(item["source"], item["streaming"]): item for item in checks
            if item["image_check"] == "full" and "cached" not in item["check"]}
    lines += ["", "| check | rows | CPU ms/row | CPU vs full decode (same path) | check's own CPU ms/row (above "
                  "reading) | own CPU vs full decode | wall s | peak MB |", "|---|---|---|---|---|---|---|---|"]
    for item in checks:
        reference = full[item["source"], item["streaming"]]
        total, mine = f"{reference['cpu_ms_per_row'] / item['cpu_ms_per_row']:.1f}x less", own[id(item)]
        if item["image_check"] == "none":
            total, mine_text, ratio = "-", "-", "-"
        elif mine < NOISE_MS:
            mine_text, ratio = f"< {NOISE_MS} ({mine:+.3f})", f"> {own[id(reference)] / NOISE_MS:.0f}x less"
        else:
            mine_text, ratio = f"{mine:.3f}", f"{own[id(reference)] / mine:.1f}x less"
        lines.append(f"| {item['check']} | {item['rows']:,} | {item['cpu_ms_per_row']:.3f} | {total} | {mine_text} | "
                     f"{ratio} | {item['seconds']:.1f} | {item['peak_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small-rows", type=int, default=100_000, help="the smaller manifest (memory growth)")
    parser.add_argument("--eager-rows", type=int, default=20_000, help="rows of the eager baseline")
    parser.add_argument("--parquet-rows", type=int, default=1_000_000, help="rows of the Parquet variant (~13 kB "
                        "of JPEG each: 1M rows are 13 GB)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--check-images", type=int, default=200, help="large images for the check's cost")
    parser.add_argument("--check-image-size", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=20, help="loader batches timed after the first")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work", default="/tmp/commercemm-bench-data")
    parser.add_argument("--quick", action="store_true", help="fewer configurations (no 2-worker or Parquet rows)")
    parser.add_argument("--output", default=str(BENCH_DIR / "results" / "bench_data.json"))
    parser.add_argument("--render", default=None, help="print the tables of a results file and stop")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    for name in ("--source", "--omni", "--image-check"):
        parser.add_argument(name, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--streaming", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cached", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        print(render(saved["runs"], saved["checks"], saved["uptime"]))
        return
    if args.child:
        result = {"check": child_check, "train": child_train}[args.child](args)
        print("RESULT_JSON " + json.dumps(result), flush=True)
        return

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"uptime: {uptime_start}", flush=True)
    sources = prepare(work, args)
    common = {"work": work, "batch_size": args.batch_size, "batches": args.batches}
    runs = []  # (label, rows, options)
    eager = args.eager_rows
    runs.append(("eager (today's path), JSON Lines", eager, dict(source=sources[f"image_text jsonl {eager}"],
                                                               omni=sources[f"omni jsonl {eager}"])))
    for rows in (args.small_rows, args.rows):
        runs.append(("streamed, one JSON Lines file", rows, dict(source=sources[f"image_text jsonl {rows}"],
                                                               omni=sources[f"omni jsonl {rows}"], streaming=True)))
        runs.append(("streamed, JSON Lines shards (glob)", rows, dict(source=sources[f"image_text shards {rows}"],
                                                                    omni=sources[f"omni shards {rows}"],
                                                                    streaming=True)))
    if not args.quick:
        runs.append(("streamed, JSON Lines shards, 2 workers", args.rows,
                     dict(source=sources[f"image_text shards {args.rows}"], omni=sources[f"omni shards {args.rows}"],
                          streaming=True, workers=2)))
        for rows in sorted({min(args.small_rows, args.parquet_rows), args.parquet_rows}):
            runs.append(("streamed, Parquet shards, embedded JPEGs", rows,
                         dict(source=sources[f"image_text parquet {rows}"], omni=sources[f"omni shards {args.rows}"]
                              if rows == args.rows else sources[f"omni shards {args.small_rows}"], streaming=True)))
        runs.append(("streamed, Parquet shards, embedded JPEGs, 2 workers", args.parquet_rows,
                     dict(source=sources[f"image_text parquet {args.parquet_rows}"],
                          omni=sources[f"omni shards {args.rows}"], streaming=True, workers=2)))
    results = []
    for label, rows, options in runs:
        print(f"{label}, {rows:,} rows ...", flush=True)
        result = run_child("train", **common, **options)
        results.append({"run": label, "rows": rows, "workers": options.get("workers", 0), **result})
        print("   ", json.dumps(result), flush=True)
    checks = []
    distinct, large = sources[f"image_text jsonl {args.images}"], args.check_image_size
    many = sources[f"image_text jsonl {eager}"]
    check_runs = []
    for name, source, rows_label in ((f"{args.images:,} rows, each its own image", distinct, args.images),
                                     (f"{large}px images", sources[f"large {large}"], args.check_images),
                                     (f"{eager:,} rows (paths repeat)", many, eager)):
        for streaming in (False, True):
            path = "streamed" if streaming else "eager"
            for check in ("none", "full", "header") + (("lazy",) if streaming else ()):
                if not streaming and check == "header" and source == many:
                    continue
                label = {"none": "reading only, no check", "full": "full decode check", "header": "header check",
                         "lazy": "lazy check (streaming default: file found, decode per batch)"}[check]
                check_runs.append((f"{path}, {label}, {name}", source, dict(image_check=check, streaming=streaming)))
    check_runs.append((f"eager, full decode check, {eager:,} rows (paths repeat), second load (cached)", many,
                       dict(image_check="full", cached=True)))
    for label, source, options in check_runs:
        result = run_child("check", source=source, **options)
        checks.append({"check": label, "source": source, "streaming": bool(options.get("streaming")),
                       "image_check": options["image_check"], **result})
        print(f"{label}: {json.dumps(result)}", flush=True)
    uptime_end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    table = render(results, checks, [uptime_start, uptime_end])
    print("\n" + table + "\n", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"benchmark": "bench_data", "args": {
        key: value for key, value in vars(args).items() if not key.startswith("child")}, "runs": results,
        "checks": checks, "table": table, "uptime": [uptime_start, uptime_end]}, indent=2, default=str))
    print(f"wrote {args.output}", flush=True)


if __name__ == "__main__":
    main()
