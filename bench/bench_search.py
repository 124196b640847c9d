"""Product search at catalog scale (issue 16): `ProductIndex` types on N synthetic unit vectors at the small preset's
projection size, each against exact search measured in the same run.

Per index type (each in a fresh interpreter, so its peak memory is its own): build time (add in 100k batches,
training included; wall and the process's CPU time, which a shared machine does not inflate), peak RSS above the
RSS with the vectors generated, resident memory of the index after the build,
queries/s at batch 1 and 64, Recall@10 against exact on 1,000 held-out queries for each search setting, and the
time to save and load it. The exact (flat) child runs first and writes the exact top-10 the others are scored on.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_search.py                    # 1M vectors (about 30 min)
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_search.py --num-vectors 100000 --quick

The vectors come from `commercemm_hf.search.clustered_unit_vectors` (1,000 category centres, a 16-dimensional spread
inside each, a little isotropic noise, L2-normalised); the queries are 1,000 further draws of the same distribution.
"""

import argparse
import json
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


#: index type -> search settings swept on the one built index
CONFIGS = {
    "flat": [{}],
    "hnsw": [{"efSearch": 32}, {"efSearch": 64}, {"efSearch": 128}],
    "ivfpq": [{"nprobe": 16}, {"nprobe": 64}],
    "IVF4096,Flat": [{"nprobe": 16}, {"nprobe": 64}],
}
NUM_QUERIES, TOP_K = 1000, 10


def small_projection_dim() -> int:
    from commercemm_hf import CommerceMMConfig

    return CommerceMMConfig.from_preset("small").projection_dim


def queries_per_second(index, queries: torch.Tensor, batch: int, min_seconds: float, max_batches: int) -> float:
    index.search(queries[:batch], TOP_K)  # warm-up
    done, started = 0, time.perf_counter()
    while done < max_batches and (time.perf_counter() - started < min_seconds or done < 2):
        start = (done * batch) % (len(queries) - batch + 1)
        index.search(queries[start:start + batch], TOP_K)
        done += 1
    return done * batch / (time.perf_counter() - started)


def child(args):
    from commercemm_hf.search import ProductIndex, clustered_unit_vectors, recall_against_exact

    torch.set_num_threads(args.threads)
    vectors = clustered_unit_vectors(args.num_vectors, args.dim, seed=0)
    queries = clustered_unit_vectors(NUM_QUERIES, args.dim, seed=0, offset=args.num_vectors)
    ids = [f"p{i}" for i in range(args.num_vectors)]
    common.reset_peak_rss()
    baseline = common.rss_mb()
    started, cpu_started = time.perf_counter(), time.process_time()
    index = ProductIndex(args.dim, index_type=args.child)
    for start in range(0, args.num_vectors, 100_000):
        index.add(vectors[start:start + 100_000], ids[start:start + 100_000])
    if index.is_approximate:
        index.train()  # a type still waiting for its training sample trains now
    build_s, build_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    resident_mb, peak_mb = common.rss_mb() - baseline, common.peak_rss_mb() - baseline
    truth_path = Path(args.truth)
    if args.child == "flat":
        truth = []
        for start in range(0, NUM_QUERIES, 250):
            truth += index.search(queries[start:start + 250], TOP_K)[1].tolist()
        np.save(truth_path, np.array(truth, dtype=np.int64))
    exact_ids = [[ids[row] for row in rows] for rows in np.load(truth_path).tolist()]
    settings = []
    for params in CONFIGS.get(args.child, [{}]):
        if params:
            index.set_search_parameters(**params)
        settings.append({
            "params": params,
            "recall_at_10": recall_against_exact(index, exact_ids, queries, k=TOP_K, batch_size=250),
            "qps_batch_1": queries_per_second(index, queries, 1, args.min_seconds, 2000),
            "qps_batch_64": queries_per_second(index, queries, 64, args.min_seconds, 200),
        })
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        started = time.perf_counter()
        index.save(Path(folder) / "index")
        save_s = time.perf_counter() - started
        size_mb = sum(f.stat().st_size for f in (Path(folder) / "index").iterdir()) / 2**20
        del index
        started = time.perf_counter()
        loaded = ProductIndex.load(Path(folder) / "index")
        load_s = time.perf_counter() - started
        assert len(loaded) == args.num_vectors
    result = {"index_type": args.child, "factory": getattr(loaded, "factory", None), "build_s": build_s,
              "build_cpu_s": build_cpu_s, "peak_mb": peak_mb, "resident_mb": resident_mb, "file_mb": size_mb,
              "save_s": save_s, "load_s": load_s,
              "settings": settings}
    print("SEARCH_JSON " + json.dumps(result), flush=True)


def table(results: list[dict], num_vectors: int, dim: int) -> str:
    exact = results[0]["settings"][0]
    lines = ["| index type | search setting | build s (CPU s) | peak MB | resident MB | file MB | save+load s | "
             "q/s batch 1 | q/s batch 64 | Recall@10 | speed-up vs exact (b1 / b64) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        for setting in result["settings"]:
            shows_factory = result["factory"] not in (None, result["index_type"])
            name = result["index_type"] + (f" (`{result['factory']}`)" if shows_factory else "")
            params = ", ".join(f"{k}={v}" for k, v in setting["params"].items()) or "-"
            lines.append(
                f"| {name} | {params} | {result['build_s']:.1f} ({result.get('build_cpu_s', float('nan')):.1f}) "
                f"| {result['peak_mb']:.0f} | {result['resident_mb']:.0f} "
                f"| {result['file_mb']:.0f} | {result['save_s']:.1f}+{result['load_s']:.1f} | "
                f"{setting['qps_batch_1']:.1f} | {setting['qps_batch_64']:.1f} | {setting['recall_at_10']:.3f} | "
                f"{setting['qps_batch_1'] / exact['qps_batch_1']:.1f}x / "
                f"{setting['qps_batch_64'] / exact['qps_batch_64']:.1f}x |")
    return f"{num_vectors:,} vectors of dim {dim}\n\n" + "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=None, help="default: the small preset's projection_dim")
    parser.add_argument("--types", nargs="+", default=list(CONFIGS), help="index types (flat always runs first)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-seconds", type=float, default=5.0, help="timing window per queries/s figure")
    parser.add_argument("--quick", action="store_true", help="1 s timing windows")
    parser.add_argument("--tmp", default=None, help="folder for the saved indexes (default: the system's)")
    parser.add_argument("--output", default=str(common.RESULTS_DIR / "search.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--truth", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.dim = args.dim or small_projection_dim()
    if args.quick:
        args.min_seconds = 1.0
    if args.child:
        return child(args)
    environment = common.environment()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory() as work:
        truth = os.path.join(work, "truth.npy")
        for index_type in ["flat"] + [t for t in args.types if t != "flat"]:
            command = [sys.executable, __file__, "--child", index_type, "--truth", truth, "--num-vectors",
                       str(args.num_vectors), "--dim", str(args.dim), "--threads", str(args.threads),
                       "--min-seconds", str(args.min_seconds)] + (["--tmp", args.tmp] if args.tmp else [])
            print(f"[{time.strftime('%H:%M:%S')}] {index_type} ...", flush=True)
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("SEARCH_JSON ")]
            if done.returncode or not lines:
                raise RuntimeError(f"{index_type} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
            results.append(json.loads(lines[-1][len("SEARCH_JSON "):]))
            print(json.dumps(results[-1]), flush=True)
    text = table(results, args.num_vectors, args.dim)
    print(f"\n{text}\n\nthreads {args.threads}; uptime at start: {uptime}", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"benchmark": "search", "num_vectors": args.num_vectors, "dim": args.dim,
                                             "threads": args.threads, "uptime_at_start": uptime,
                                             "uptime_at_end": subprocess.run(["uptime"], capture_output=True,
                                                                             text=True).stdout.strip(),
                                             "environment": environment, "results": results, "table": text},
                                            indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
