"""Run every CommerceMM benchmark (targets 1-6) in turn and print one combined table.

Each benchmark runs in its own fresh interpreter (so one's memory and allocator state never colours the next) with
the same `--threads` / `--repeats` / `--quick`; each writes bench/results/<name>.json, and this script writes the
combined table to bench/results/all.json.

Usage: python bench/run_all.py [--quick] [--threads 1 2] [--repeats 10] [--only pretraining flops ...]
                               [--demo-model outputs/demo/commercemm-tiny-demo]
"""

import argparse
import json
import subprocess
import sys
import time

import common


BENCHMARKS = {  # result name -> script
    "pretraining": "bench_pretraining.py",
    "two_pass": "bench_two_pass.py",
    "inference": "bench_inference.py",
    "flops": "bench_flops.py",
    "processor": "bench_processor.py",
    "modality_randomization": "bench_modality_randomization.py",
}
TITLE = "CommerceMM benchmarks (bench/run_all.py): every target, measured in this run"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 repeats, short demo pretraining")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (inference, pretraining)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--demo-model", metavar="FOLDER", help="a saved demo model (e.g. outputs/demo/commercemm-tiny-"
                        "demo) for the Recall@10 column of target 6, instead of a short pretraining in the benchmark")
    args = parser.parse_args()
    shared = (["--threads", *map(str, args.threads), "--repeats", str(args.repeats)]
              + (["--quick"] if args.quick else []))
    started, failures, results = time.time(), {}, {}
    load_before = common.environment()["load_average_at_start"]
    for name in args.only:
        script = str(common.BENCH_DIR / BENCHMARKS[name])
        extra = ["--compile"] if args.compile and name in ("inference", "pretraining") else []
        if args.demo_model and name == "modality_randomization":
            extra += ["--model", args.demo_model]
        print(f"=== {name}: {' '.join([sys.executable, script, *shared, *extra])}", flush=True)
        begun = time.time()
        completed = subprocess.run([sys.executable, script, *shared, *extra])
        print(f"=== {name}: exit {completed.returncode} after {time.time() - begun:.0f} s", flush=True)
        if completed.returncode != 0:
            failures[name] = completed.returncode
            continue
        results[name] = json.loads((common.RESULTS_DIR / f"{name}.json").read_text())
    rows = [row for result in results.values() for row in result["rows"]]
    tables = [table for result in results.values() for table in result["table"].split("\n\n")[1:]]
    environment = common.environment()
    load = f"load average {load_before} at start, {environment['load_average_at_start']} at end"
    summary = common.format_table(f"{TITLE} ({load}; {environment['cpu_count']} cores shared with other jobs)", rows)
    print("\n" + "\n\n".join([summary, *tables]) + "\n")
    if failures:
        print(f"FAILED: {failures}")
    unmet = [f"{row['target']}: {row['metric']} (threads {row['threads']})" for row in rows if row["met"] is False]
    print(f"{sum(row['met'] is True for row in rows)} target rows met, {len(unmet)} not met"
          + (":\n  " + "\n  ".join(unmet) if unmet else "") + f"\ntotal {time.time() - started:.0f} s")
    payload = {"title": TITLE, "quick": args.quick, "threads": args.threads, "repeats": args.repeats,
               "load_average_before": load_before, "environment": environment, "failures": failures,
               "rows": rows, "table": "\n\n".join([summary, *tables]), "seconds": time.time() - started}
    (common.RESULTS_DIR / "all.json").write_text(json.dumps(payload, indent=2, default=float))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
