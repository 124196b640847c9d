"""The example scripts (`examples/run_*.py`) end to end, in subprocesses, on a tiny slice of the demo catalog and on
a user's JSON Lines files: results files, Hub-ready folders loaded with `pipeline(...)` in a fresh process without
the package, resume, a `torchrun --nproc_per_node=2` run and an `accelerate launch` run on CSV files."""

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import check_publishable_and_loadable, run_without_package
from PIL import Image


ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NUM_PRODUCTS = 30  # the demo catalog splits it 24 / 3 / 3 products
RETRIEVAL_KEYS = ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10")


def fast(output_dir, max_steps: int = 2, *extra) -> list[str]:
    return ["--output_dir", str(output_dir), "--demo_num_products", str(NUM_PRODUCTS), "--max_steps", str(max_steps),
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "32", "--logging_steps", "1",
            "--vocab_size", "500", "--disable_tqdm", "true", *map(str, extra)]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    values = {key: value for key, value in os.environ.items()
              if not key.startswith(("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_", "PYTHONPATH"))}
    values.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                  HF_DATASETS_CACHE=str(tmp_path_factory.mktemp("datasets_cache")))
    return values


def run(command: list, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-5000:]}"
    return result


def run_script(script: str, argv: list, env: dict) -> subprocess.CompletedProcess:
    return run([sys.executable, EXAMPLES / script, *argv], env)


def run_many(runs: list[tuple[str, list]], env: dict) -> str:
    """Several runs of the scripts' `main(argv)` in one subprocess (saves the start-up time of each); a `"copy"`
    entry copies folder `argv[0]` to `argv[1]`. Returns the output."""
    code = textwrap.dedent(f"""
        import runpy, shutil
        for script, argv in {[(str(EXAMPLES / script), [str(a) for a in argv]) for script, argv in runs]!r}:
            if script.endswith("copy"):
                shutil.copytree(*argv)
            else:
                runpy.run_path(script, run_name="example")["main"](argv)
    """)
    result = run([sys.executable, "-c", code], env)
    return result.stdout + result.stderr


def results(folder: Path) -> dict:
    return json.loads((folder / "all_results.json").read_text())


def check_categorization(metrics: dict, prefix: str, multi_label: bool = False):
    keys = ("accuracy", "macro_f1") + (("micro_f1",) if multi_label else ())
    for key in keys:
        assert 0.0 <= metrics[f"{prefix}_{key}"] <= 1.0, (key, metrics)
    assert math.isfinite(metrics[f"{prefix}_loss"])


def check_ranks(metrics: dict, prefix: str, num_products: int, num_queries: int | None = None, tolerance=1e-6):
    """Retrieval metrics with one gold product per query among `num_products`: all present, and consistent with
    ranks between 1 and `num_products`. Recall@k for k >= num_products is 1.0 for any model (every product is in
    the top k), so over the demo catalog's 3 validation products only Recall@1, MRR and nDCG@10 are checked."""
    values = {key: metrics[f"{prefix}_{key}"] for key in RETRIEVAL_KEYS}
    top1 = values["recall@1"]
    assert 0.0 <= top1 <= 1.0, values
    for k in (5, 10):
        if k < num_products:
            assert top1 <= values[f"recall@{k}"] <= 1.0, values
    # a query missed at rank 1 has its gold product at a rank between 2 and num_products
    missed = 1.0 - top1
    assert top1 + missed / num_products - tolerance <= values["mrr"] <= top1 + missed / 2 + tolerance, values
    lowest_gain = 1 / math.log2(num_products + 1) if num_products <= 10 else 0.0
    assert top1 + missed * lowest_gain - tolerance <= values["ndcg@10"] <= top1 + missed / math.log2(3) + tolerance
    if num_queries is not None:  # Recall@1 counts whole hits among the queries
        assert abs(top1 * num_queries - round(top1 * num_queries)) < 1e-4, values


def check_retrieval(metrics: dict, prefix: str, num_queries: int, num_products: int):
    assert metrics[f"{prefix}_num_queries"] == num_queries and metrics[f"{prefix}_num_products"] == num_products
    check_ranks(metrics, prefix, num_products, num_queries)


# ------------------------------------------------------------------------------------------------ the runs


COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220)}
SHAPES = ("mug", "lamp")
DIRECTIONS = ("image_to_product", "product_to_product", "image_to_text", "text_to_image")


def write_user_files(folder: Path) -> None:
    """train.jsonl / validation.jsonl with image paths relative to the files, and one row whose image is missing."""
    (folder / "images").mkdir(parents=True)
    rows = []
    for index in range(18):
        colour, shape = list(COLOURS)[index % 3], SHAPES[(index // 3) % 2]
        for view, offset in (("front", 0), ("side", 6)):
            image = Image.new("RGB", (48, 40), (240, 240, 235))
            box = (8 + offset, 6, 36 + offset, 34)
            image.paste(COLOURS[colour], box)
            if shape == "lamp":
                image.paste((250, 230, 60), (box[0], box[1], box[2], box[1] + 8))
            image.save(folder / "images" / f"p{index}_{view}.png")
        rows.append({"sku": f"p{index}", "title": f"{colour} ceramic {shape} no. {index}", "category": shape,
                     "tags": [colour, shape], "photo": f"images/p{index}_front.png",
                     "search": f"{colour} {shape}", "other_view": f"images/p{index}_side.png"})
    bad = dict(rows[0], sku="broken", photo="images/missing.png", other_view="images/missing.png")
    train = rows[:14] + [bad]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(row) for row in train) + "\n")
    (folder / "validation.jsonl").write_text("\n".join(json.dumps(row) for row in rows[14:]) + "\n")


@pytest.fixture(scope="module")
def work(tmp_path_factory, env):
    """Every run but the torchrun one. `run_pretraining.py` and `run_categorization.py` (on the user's files) run as
    scripts; the other runs call the scripts' `main(argv)` one after another in one more subprocess, which spares
    the start-up time of each."""
    work = tmp_path_factory.mktemp("examples")
    write_user_files(work / "data")
    run_script("run_pretraining.py", fast(work / "pretraining"), env)
    files = ["--train_file", work / "data" / "train.jsonl", "--validation_file", work / "data" / "validation.jsonl",
             "--product_id_column", "sku", "--text_column", "title", "--max_steps", "2",
             "--per_device_train_batch_size", "4", "--vocab_size", "300", "--disable_tqdm", "true"]
    run_script("run_categorization.py", ["--output_dir", work / "category", "--image_column", "photo",
                                         "--label_column", "category", *files], env)
    once = ["--do_train", "--do_eval"]
    runs = [
        # the demo catalog with nothing but the output folder (and a small, fast setting): train, eval, test
        ("run_categorization.py", fast(work / "categorization", 4, "--save_steps", "2")),
        # the same run stopped after checkpoint-2, started again: resumes from checkpoint-2
        ("copy", [work / "categorization" / "checkpoint-2", work / "resumed" / "checkpoint-2"]),
        ("run_categorization.py", fast(work / "resumed", 4, "--save_steps", "2")),
        # the finished run started again: resumes at checkpoint-4 = max_steps, trains nothing
        ("copy", [work / "categorization", work / "rerun"]),
        ("run_categorization.py", fast(work / "rerun", 4, "--save_steps", "2")),
        # checkpoints kept: the default limit, and the user's
        ("run_categorization.py", fast(work / "limited", 3, "--save_steps", "1", "--do_train")),
        ("run_categorization.py", fast(work / "kept", 3, "--save_steps", "1", "--do_train", "--save_total_limit", "3")),
        ("run_retrieval.py", ["--task", "query_to_product", *fast(work / "query_to_product")]),
        # image_to_text starts from the pretraining folder: its encoders and processor load into the retrieval head
        *[("run_retrieval.py", ["--task", task, *fast(work / task), *once, *(
            ["--model_name_or_path", work / "pretraining"] if task == "image_to_text" else [])])
          for task in DIRECTIONS],
        # the user's JSON Lines files
        ("run_categorization.py", ["--output_dir", work / "tags", "--label_column", "tags", *files]),  # text only
        # with the text embedding of the product as the target, and a preset changed from the command line
        ("run_retrieval.py", ["--output_dir", work / "search", "--task", "query_to_product", "--query_column",
                              "search", "--image_column", "photo", "--product_embedding", "text",
                              "--config_overrides", "projection_dim=64,text_config.pooling=mean,"
                              "vision_config.image_size=32,vision_config.num_hidden_layers=2,image_depth_choices=[1,2]",
                              *files]),
        ("run_retrieval.py", ["--output_dir", work / "views", "--task", "image_to_product", "--hard_negatives",
                              "--query_image_column", "other_view", "--image_column", "photo", *files]),
    ]
    output = run_many(runs, env)
    assert f"resuming training at {work / 'resumed' / 'checkpoint-2'}" in output
    (work / "output.txt").write_text(output)
    return work


@pytest.fixture(scope="module")
def demo_catalog():
    from commercemm_hf.data import build_demo_catalog

    return build_demo_catalog(num_products=NUM_PRODUCTS, seed=0, image_size=64)


@pytest.fixture(scope="module")
def fresh_loads(work, demo_catalog, env):
    """The categorization and query_to_product folders loaded with pipeline(...) / AutoModel in a fresh process
    where commercemm_hf cannot be imported."""
    products = demo_catalog["test"]
    for index, row in enumerate(products):
        row["image"].save(work / f"product_{index}.png")
    return run_without_package(f"""
        import json
        from PIL import Image
        from transformers import AutoModel, pipeline
        images = [Image.open(f"product_{{i}}.png") for i in range({len(products)})]
        texts = {list(products["text"])!r}
        classify = pipeline("product-categorization", model="categorization", trust_remote_code=True)
        both = classify({{"image": images[0], "text": texts[0]}}, top_k=30)
        text_only = classify("red ceramic mug", top_k=2)
        search = pipeline("product-search", model="query_to_product", trust_remote_code=True)
        search.index_products([{{"image": image, "text": text}} for image, text in zip(images, texts)],
                              product_ids={list(products["product_id"])!r})
        hits = search({products[0]["queries"][0]!r}, top_k=3)
        model = AutoModel.from_pretrained("query_to_product", trust_remote_code=True)
        print(json.dumps({{"labels": [r["label"] for r in both], "total": sum(r["score"] for r in both),
                          "text_only": len(text_only), "hits": [hit["product_id"] for hit in hits],
                          "model": type(model).__name__}}))
    """, work, env={"HF_DATASETS_CACHE": env["HF_DATASETS_CACHE"]})


def test_categorization_on_the_demo_catalog_loads_with_pipeline(work, demo_catalog, fresh_loads):
    metrics = results(work / "categorization")
    assert metrics["train_samples"] == 24 and math.isfinite(metrics["train_loss"])
    check_categorization(metrics, "eval")
    check_categorization(metrics, "test")
    assert json.loads((work / "categorization" / "eval_results.json").read_text())["eval_samples"] == 3
    config = json.loads((work / "categorization" / "config.json").read_text())
    names = demo_catalog["train"].features["label"].names
    assert [config["id2label"][str(i)] for i in range(len(names))] == names
    assert config["problem_type"] == "single_label_classification"
    assert sorted(fresh_loads["labels"]) == sorted(names) and fresh_loads["total"] == pytest.approx(1.0, abs=1e-4)
    assert fresh_loads["text_only"] == 2


def test_categorization_resumes_from_the_last_checkpoint(work):
    def losses(folder):
        state = json.loads((folder / "trainer_state.json").read_text())
        return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}

    straight, resumed = losses(work / "categorization"), losses(work / "resumed")
    assert sorted(resumed) == [1, 2, 3, 4]  # steps 1-2 from the checkpoint's state, 3-4 trained after resuming
    for step in (1, 2, 3, 4):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-4, abs=1e-4)
    assert results(work / "resumed")["eval_loss"] == pytest.approx(results(work / "categorization")["eval_loss"],
                                                                     rel=1e-4)


def test_rerunning_a_finished_fine_tune_keeps_its_train_results(work):
    original = json.loads((work / "categorization" / "train_results.json").read_text())
    assert original["train_loss"] > 0.0
    assert json.loads((work / "rerun" / "train_results.json").read_text()) == original  # not train_loss 0.0
    assert results(work / "rerun")["train_loss"] == original["train_loss"]
    state_file = "trainer_state.json"
    assert (work / "rerun" / state_file).read_text() == (work / "categorization" / state_file).read_text()
    assert f"{work / 'rerun' / 'checkpoint-4'} already finished this run (step 4 of 4): nothing to train" in (
        work / "output.txt").read_text()
    assert not (work / "rerun" / "checkpoint-5").exists()  # transformers 5.24 would train one step past max_steps
    # evaluated with the trained weights, as the run that trained them was
    assert results(work / "rerun")["eval_loss"] == pytest.approx(results(work / "categorization")["eval_loss"],
                                                                  rel=1e-5)


def test_checkpoint_size_is_logged_and_checkpoints_are_limited_by_default(work):
    from commercemm_hf.training.checkpoints import folder_size, megabytes

    total, optimizer = folder_size(work / "categorization" / "checkpoint-2")
    assert optimizer > (work / "categorization" / "checkpoint-2" / "model.safetensors").stat().st_size  # AdamW: 2x
    assert (f"Saved checkpoint-2: {megabytes(total)} (model weights and trainer state {megabytes(total - optimizer)}, "
            f"optimizer state "
            f"{megabytes(optimizer)}) in {work / 'categorization'}; keeping the last 2 checkpoints (save_total_limit)."
            in (work / "output.txt").read_text())
    # --save_steps 1 over 3 steps: only the last two checkpoints stay; the user's --save_total_limit wins
    assert sorted(path.name for path in (work / "limited").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert sorted(path.name for path in (work / "kept").glob("checkpoint-*")) == [f"checkpoint-{i}" for i in (1, 2, 3)]


def test_categorization_heads_record_the_modalities_they_read(work):
    assert json.loads((work / "categorization" / "config.json").read_text())["expected_modalities"] == ["image", "text"]
    assert json.loads((work / "tags" / "config.json").read_text())["expected_modalities"] == ["text"]
    assert json.loads((work / "category" / "config.json").read_text())["expected_modalities"] == ["image", "text"]


def test_retrieval_query_to_product_on_the_demo_catalog_loads_with_product_search(work, demo_catalog, fresh_loads):
    metrics = results(work / "query_to_product")
    check_retrieval(metrics, "eval", num_queries=9, num_products=3)  # 3 queries per validation product
    check_retrieval(metrics, "test", num_queries=9, num_products=3)
    assert sorted(fresh_loads["hits"]) == sorted(demo_catalog["test"]["product_id"])
    assert fresh_loads["model"] == "CommerceMMModel"


def test_pretraining_on_the_demo_catalog(work):
    metrics = results(work / "pretraining")
    assert math.isfinite(metrics["train_loss"])
    for task in ("mlm", "itc", "itm", "mim_kl", "omni_text_to_multimodal"):
        assert math.isfinite(metrics[f"eval_{task}_loss"])
    for source in ("query", "view", "post"):  # over the 3 validation products; the trainer rounds to 4 decimals
        check_ranks(metrics, f"eval_{source}_to_product", num_products=3, tolerance=1e-4)
    config = json.loads((work / "pretraining" / "config.json").read_text())
    assert config["architectures"] == ["CommerceMMModel"] and "product-search" in config["custom_pipelines"]


def test_retrieval_every_other_direction_on_the_demo_catalog(work):
    queries = {"image_to_product": 6, "product_to_product": 3, "image_to_text": 3, "text_to_image": 3}
    for task in DIRECTIONS:
        metrics = results(work / task)
        check_retrieval(metrics, "eval", num_queries=queries[task], num_products=3)
        assert "test_recall@1" not in metrics  # --do_train --do_eval: no test run
        config = json.loads((work / task / "config.json").read_text())
        assert config["architectures"] == ["CommerceMMModel"]
    # image_to_text started from the pretraining folder, and kept its tokenizer
    tokenizer_file = "tokenizer.json"
    assert (work / "image_to_text" / tokenizer_file).read_text() == (work / "pretraining" / tokenizer_file).read_text()


def test_user_jsonl_files_with_relative_image_paths_and_a_bad_row(work):
    train_file = str(work / "data" / "train.jsonl")
    for name in ("category", "tags", "search", "views"):
        report = json.loads((work / name / "data_report.json").read_text())[train_file]
        if name == "tags":  # text only: the missing image does not matter
            assert report["rows_skipped"] == 0 and report["rows_kept"] == 15
        else:
            assert report["rows_read"] == 15 and report["rows_kept"] == 14 and report["rows_skipped"] == 1
            assert report["skipped"][0]["index"] == 14 and "image file not found" in report["skipped"][0]["reason"]
    check_categorization(results(work / "category"), "eval")
    assert json.loads((work / "category" / "config.json").read_text())["label2id"] == {"lamp": 0, "mug": 1}
    check_categorization(results(work / "tags"), "eval", multi_label=True)
    config = json.loads((work / "tags" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert sorted(config["label2id"]) == sorted([*COLOURS, *SHAPES])
    for name in ("search", "views"):
        check_retrieval(results(work / name), "eval", num_queries=4, num_products=4)
    assert "Hard negatives: 14 training products embedded" in (work / "output.txt").read_text()
    search = json.loads((work / "search" / "config.json").read_text())
    assert (search["retrieval_source"], search["retrieval_target"], search["projection_dim"]) == ("text", "text", 64)
    assert search["text_config"]["pooling"] == "mean" and search["vision_config"]["num_hidden_layers"] == 2
    assert search["vision_config"]["image_size"] == 32 and search["image_depth_choices"] == [1, 2]
    processor = json.loads((work / "search" / "processor_config.json").read_text())
    assert processor["image_processor"]["crop_size"] == {"height": 32, "width": 32}


# ------------------------------------------------------------------------------------------------ torchrun


def test_retrieval_under_torchrun_with_two_processes(tmp_path, env):
    output = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               EXAMPLES / "run_retrieval.py", "--task", "query_to_product", *fast(output, 2), "--do_train",
               "--do_eval"]
    result = run(command, env)
    assert "Process rank: 1 of 2" in result.stdout + result.stderr
    metrics = results(output)
    # 72 query rows, 2 steps of 4 rows on each of 2 processes
    assert metrics["epoch"] == pytest.approx(2 * 4 * 2 / 72)
    # every validation query and product embedded once across the two processes, then ranked
    check_retrieval(metrics, "eval", num_queries=9, num_products=3)
    assert (output / "model.safetensors").exists()


def test_categorization_on_csv_files_under_accelerate_launch_with_two_processes(tmp_path, env):
    # CSV with image paths relative to the file (as for JSON Lines), launched the way `accelerate` users do
    write_user_files(tmp_path / "data")
    for split in ("train", "validation"):
        rows = [json.loads(line) for line in (tmp_path / "data" / f"{split}.jsonl").read_text().splitlines()]
        with open(tmp_path / "data" / f"{split}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["sku", "title", "category", "photo"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    output = tmp_path / "accelerate"
    # accelerate's `--cpu` runs ONE process (several only through mpirun); `--multi_gpu` is its torchrun launcher,
    # which on a machine without GPUs the scripts turn into DDP over gloo
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               EXAMPLES / "run_categorization.py",
               "--train_file", tmp_path / "data" / "train.csv",
               "--validation_file", tmp_path / "data" / "validation.csv",
               "--image_column", "photo", "--text_column", "title", "--label_column", "category", "--max_steps", "2",
               "--per_device_train_batch_size", "4", "--vocab_size", "300", "--disable_tqdm", "true",
               "--output_dir", output]
    result = run(command, env)
    assert "Process rank: 1 of 2" in result.stdout + result.stderr
    metrics = results(output)
    # 14 good rows (one image is missing): 7 per process, 2 batches of 4 per epoch (one process would need 4)
    assert metrics["epoch"] == pytest.approx(1.0)
    check_categorization(metrics, "eval")
    report = json.loads((output / "data_report.json").read_text())[str(tmp_path / "data" / "train.csv")]
    assert report["rows_kept"] == 14 and report["rows_skipped"] == 1
    assert json.loads((output / "config.json").read_text())["label2id"] == {"lamp": 0, "mug": 1}


def test_every_folder_the_scripts_write_is_publishable_and_loads_with_each_auto_class(work, env):
    """Training checkpoints stay out of the upload (checkpoint-N/ holds optimizer and RNG pickles); every Auto class
    of auto_map loads the folder where the package is not installed."""
    folders = [work / name for name in ("pretraining", "category", "categorization", "query_to_product", "tags",
                                        "search", "views", *DIRECTIONS)]
    assert any((folder / "checkpoint-2").is_dir() for folder in folders)
    loaded = check_publishable_and_loadable(folders, work, env={"HF_DATASETS_CACHE": env["HF_DATASETS_CACHE"]})
    assert loaded[str(work / "pretraining")]["AutoModel"] == "CommerceMMModel"
    assert loaded[str(work / "categorization")]["AutoModelForSequenceClassification"] == \
        "CommerceMMForProductCategorization"
