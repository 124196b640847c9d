"""The example scripts (`examples/run_*.py`) end to end, in subprocesses, on a tiny slice of the demo catalog and on
a user's JSON Lines files: results files, Hub-ready folders loaded with `pipeline(...)` in a fresh process without
the package, resume, a `torchrun --nproc_per_node=2` run and an `accelerate launch` run on CSV files."""

import csv
import json
import math
import sys
from pathlib import Path

import pytest
from helpers import COLOURS, DIRECTIONS, EXAMPLES, SHAPES, check_publishable_and_loadable, fast, run, write_user_files


RETRIEVAL_KEYS = ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10")


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


def test_categorization_on_the_demo_catalog_loads_with_pipeline(
    example_runs, example_demo_catalog, example_fresh_loads
):
    metrics = results(example_runs / "categorization")
    assert metrics["train_samples"] == 24 and math.isfinite(metrics["train_loss"])
    check_categorization(metrics, "eval")
    check_categorization(metrics, "test")
    assert json.loads((example_runs / "categorization" / "eval_results.json").read_text())["eval_samples"] == 3
    config = json.loads((example_runs / "categorization" / "config.json").read_text())
    names = example_demo_catalog["train"].features["label"].names
    assert [config["id2label"][str(i)] for i in range(len(names))] == names
    assert config["problem_type"] == "single_label_classification"
    assert sorted(example_fresh_loads["labels"]) == sorted(names) and example_fresh_loads["total"] == pytest.approx(
        1.0, abs=1e-4
    )
    assert example_fresh_loads["text_only"] == 2


def test_categorization_resumes_from_the_last_checkpoint(example_runs):
    def losses(folder):
        state = json.loads((folder / "trainer_state.json").read_text())
        return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}

    straight, resumed = losses(example_runs / "categorization"), losses(example_runs / "resumed")
    assert sorted(resumed) == [1, 2, 3, 4]  # steps 1-2 from the checkpoint's state, 3-4 trained after resuming
    for step in (1, 2, 3, 4):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-4, abs=1e-4)
    assert results(example_runs / "resumed")["eval_loss"] == pytest.approx(
        results(example_runs / "categorization")["eval_loss"], rel=1e-4
    )


def test_rerunning_a_finished_fine_tune_keeps_its_train_results(example_runs):
    original = json.loads((example_runs / "categorization" / "train_results.json").read_text())
    assert original["train_loss"] > 0.0
    assert json.loads((example_runs / "rerun" / "train_results.json").read_text()) == original  # not train_loss 0.0
    assert results(example_runs / "rerun")["train_loss"] == original["train_loss"]
    state_file = "trainer_state.json"
    assert (example_runs / "rerun" / state_file).read_text() == (
        example_runs / "categorization" / state_file
    ).read_text()
    assert f"{example_runs / 'rerun' / 'checkpoint-4'} already finished this run (step 4 of 4): nothing to train" in (
        example_runs / "output.txt").read_text()
    assert not (
        example_runs / "rerun" / "checkpoint-5"
    ).exists()  # transformers 5.24 would train one step past max_steps
    # evaluated with the trained weights, as the run that trained them was
    assert results(example_runs / "rerun")["eval_loss"] == pytest.approx(
        results(example_runs / "categorization")["eval_loss"], rel=1e-5
    )


def test_checkpoint_size_is_logged_and_checkpoints_are_limited_by_default(example_runs):
    from commercemm_hf.training.checkpoints import folder_size, megabytes

    total, optimizer = folder_size(example_runs / "categorization" / "checkpoint-2")
    assert (
        optimizer > (example_runs / "categorization" / "checkpoint-2" / "model.safetensors").stat().st_size
    )  # AdamW: 2x
    assert (
        f"Saved checkpoint-2: {megabytes(total)} (model weights and trainer state {megabytes(total - optimizer)}, "
        f"optimizer state {megabytes(optimizer)}) in {example_runs / 'categorization'}; keeping the last 2 "
        "checkpoints (save_total_limit)."
        in (example_runs / "output.txt").read_text()
    )
    # --save_steps 1 over 3 steps: only the last two checkpoints stay; the user's --save_total_limit wins
    assert sorted(path.name for path in (example_runs / "limited").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-3",
    ]
    assert sorted(path.name for path in (example_runs / "kept").glob("checkpoint-*")) == [
        f"checkpoint-{i}" for i in (1, 2, 3)
    ]


def test_categorization_heads_record_the_modalities_they_read(example_runs):
    assert json.loads((example_runs / "categorization" / "config.json").read_text())["expected_modalities"] == [
        "image",
        "text",
    ]
    assert json.loads((example_runs / "tags" / "config.json").read_text())["expected_modalities"] == ["text"]
    assert json.loads((example_runs / "category" / "config.json").read_text())["expected_modalities"] == [
        "image",
        "text",
    ]


def test_retrieval_query_to_product_on_the_demo_catalog_loads_with_product_search(
    example_runs, example_demo_catalog, example_fresh_loads
):
    metrics = results(example_runs / "query_to_product")
    check_retrieval(metrics, "eval", num_queries=9, num_products=3)  # 3 queries per validation product
    check_retrieval(metrics, "test", num_queries=9, num_products=3)
    assert sorted(example_fresh_loads["hits"]) == sorted(example_demo_catalog["test"]["product_id"])
    assert example_fresh_loads["model"] == "CommerceMMModel"


def test_pretraining_on_the_demo_catalog(example_runs):
    metrics = results(example_runs / "pretraining")
    assert math.isfinite(metrics["train_loss"])
    for task in ("mlm", "itc", "itm", "mim_kl", "omni_text_to_multimodal"):
        assert math.isfinite(metrics[f"eval_{task}_loss"])
    for source in ("query", "view", "post"):  # over the 3 validation products; the trainer rounds to 4 decimals
        check_ranks(metrics, f"eval_{source}_to_product", num_products=3, tolerance=1e-4)
    config = json.loads((example_runs / "pretraining" / "config.json").read_text())
    assert config["architectures"] == ["CommerceMMModel"] and "product-search" in config["custom_pipelines"]


def test_retrieval_every_other_direction_on_the_demo_catalog(example_runs):
    queries = {"image_to_product": 6, "product_to_product": 3, "image_to_text": 3, "text_to_image": 3}
    for task in DIRECTIONS:
        metrics = results(example_runs / task)
        check_retrieval(metrics, "eval", num_queries=queries[task], num_products=3)
        assert "test_recall@1" not in metrics  # --do_train --do_eval: no test run
        config = json.loads((example_runs / task / "config.json").read_text())
        assert config["architectures"] == ["CommerceMMModel"]
    # image_to_text started from the pretraining folder, and kept its tokenizer
    tokenizer_file = "tokenizer.json"
    assert (example_runs / "image_to_text" / tokenizer_file).read_text() == (
        example_runs / "pretraining" / tokenizer_file
    ).read_text()


def test_user_jsonl_files_with_relative_image_paths_and_a_bad_row(example_runs):
    train_file = str(example_runs / "data" / "train.jsonl")
    for name in ("category", "tags", "search", "views"):
        report = json.loads((example_runs / name / "data_report.json").read_text())[train_file]
        if name == "tags":  # text only: the missing image does not matter
            assert report["rows_skipped"] == 0 and report["rows_kept"] == 15
        else:
            assert report["rows_read"] == 15 and report["rows_kept"] == 14 and report["rows_skipped"] == 1
            assert report["skipped"][0]["index"] == 14 and "image file not found" in report["skipped"][0]["reason"]
    check_categorization(results(example_runs / "category"), "eval")
    assert json.loads((example_runs / "category" / "config.json").read_text())["label2id"] == {"lamp": 0, "mug": 1}
    check_categorization(results(example_runs / "tags"), "eval", multi_label=True)
    config = json.loads((example_runs / "tags" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert sorted(config["label2id"]) == sorted([*COLOURS, *SHAPES])
    for name in ("search", "views"):
        check_retrieval(results(example_runs / name), "eval", num_queries=4, num_products=4)
    assert "Hard negatives: 14 training products embedded" in (example_runs / "output.txt").read_text()
    search = json.loads((example_runs / "search" / "config.json").read_text())
    assert (search["retrieval_source"], search["retrieval_target"], search["projection_dim"]) == ("text", "text", 64)
    assert search["text_config"]["pooling"] == "mean" and search["vision_config"]["num_hidden_layers"] == 2
    assert search["vision_config"]["image_size"] == 32 and search["image_depth_choices"] == [1, 2]
    processor = json.loads((example_runs / "search" / "processor_config.json").read_text())
    assert processor["image_processor"]["crop_size"] == {"height": 32, "width": 32}


# ------------------------------------------------------------------------------------------------ torchrun


def test_retrieval_under_torchrun_with_two_processes(tmp_path, example_env):
    output = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               EXAMPLES / "run_retrieval.py", "--task", "query_to_product", *fast(output, 2), "--do_train",
               "--do_eval"]
    result = run(command, example_env)
    assert "Process rank: 1 of 2" in result.stdout + result.stderr
    metrics = results(output)
    # 72 query rows, 2 steps of 4 rows on each of 2 processes
    assert metrics["epoch"] == pytest.approx(2 * 4 * 2 / 72)
    # every validation query and product embedded once across the two processes, then ranked
    check_retrieval(metrics, "eval", num_queries=9, num_products=3)
    assert (output / "model.safetensors").exists()


def test_categorization_on_csv_files_under_accelerate_launch_with_two_processes(tmp_path, example_env):
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
    result = run(command, example_env)
    assert "Process rank: 1 of 2" in result.stdout + result.stderr
    metrics = results(output)
    # 14 good rows (one image is missing): 7 per process, 2 batches of 4 per epoch (one process would need 4)
    assert metrics["epoch"] == pytest.approx(1.0)
    check_categorization(metrics, "eval")
    report = json.loads((output / "data_report.json").read_text())[str(tmp_path / "data" / "train.csv")]
    assert report["rows_kept"] == 14 and report["rows_skipped"] == 1
    assert json.loads((output / "config.json").read_text())["label2id"] == {"lamp": 0, "mug": 1}


def test_every_folder_the_scripts_write_is_publishable_and_loads_with_each_auto_class(example_runs, example_env):
    """Training checkpoints stay out of the upload (checkpoint-N/ holds optimizer and RNG pickles); every Auto class
    of auto_map loads the folder where the package is not installed."""
    folders = [example_runs / name for name in ("pretraining", "category", "categorization", "query_to_product", "tags",
                                        "search", "views", *DIRECTIONS)]
    assert any((folder / "checkpoint-2").is_dir() for folder in folders)
    loaded = check_publishable_and_loadable(
        folders, example_runs, env={"HF_DATASETS_CACHE": example_env["HF_DATASETS_CACHE"]}
    )
    assert loaded[str(example_runs / "pretraining")]["AutoModel"] == "CommerceMMModel"
    assert loaded[str(example_runs / "categorization")]["AutoModelForSequenceClassification"] == \
        "CommerceMMForProductCategorization"
