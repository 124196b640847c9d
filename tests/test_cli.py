"""The command line: the demo end to end (tiny), and `commercemm pretrain` on a user's JSON Lines files with resume."""

import json
import logging

import pytest
from helpers import check_publishable_and_loadable, tiny_datasets, write_jsonl

from commercemm_hf.cli import main, run_demo


def test_pretrain_command_on_jsonl_files_saves_a_folder_and_resumes(tmp_path, capsys, caplog):
    image_text, omni = tiny_datasets(8)
    train_file = write_jsonl(image_text, tmp_path / "image_text", ["image"])
    omni_file = write_jsonl(omni, tmp_path / "omni", ["image", "source_image"])
    common = ["pretrain", "--train-file", str(train_file), "--omni-file", str(omni_file), "--batch-size", "4",
              "--save-steps", "2", "--vocab-size", "300", "--output-dir", str(tmp_path / "out")]
    with caplog.at_level(logging.WARNING):
        main(common + ["--steps", "2"])
    out = capsys.readouterr().out
    # the checkpoint's size on disk is said at its first save
    assert any(record.getMessage().startswith("Saved checkpoint-2: ") and "optimizer state" in record.getMessage()
               and "keeping the last 1 checkpoint (save_total_limit)" in record.getMessage()
               for record in caplog.records)
    assert "image-text rows" in out and "Saved the Hub-ready folder" in out
    assert (tmp_path / "out" / "model" / "model.safetensors").exists()
    assert (tmp_path / "out" / "checkpoints" / "checkpoint-2").exists()
    # the tiny preset already starts at 1/sqrt(128), so nothing to change or say
    saved_config = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert saved_config["initializer_range"] == pytest.approx(128 ** -0.5)
    assert "from scratch: initializer_range" not in out + caplog.text

    check_publishable_and_loadable([tmp_path / "out" / "model"], tmp_path)

    main(common + ["--steps", "4", "--resume"])
    state = json.loads((tmp_path / "out" / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # resumed, not restarted: only steps 3 and 4 ran (one log line each)
    assert capsys.readouterr().out.count("{'loss'") == 2


@pytest.mark.parametrize("options, expected", [
    ({}, 384 ** -0.5),                                        # small from scratch: 1/sqrt(384), not BERT's 0.02
    ({"initializer_range": 0.03}, 0.03),                      # the user's choice wins
    ({"text_backbone": "minilm"}, 0.02),                      # imported weights: the preset's value
])
def test_pretraining_from_scratch_starts_wide_enough(options, expected, caplog):
    # `commercemm pretrain` hands --preset, --initializer-range and the backbones to create_model_and_processor,
    # which holds the rule
    from commercemm_hf import create_model_and_processor

    texts = None if "text_backbone" in options else ["red mug", "blue lamp"] * 5
    with caplog.at_level(logging.WARNING, logger="commercemm_hf.factory"):
        model, _ = create_model_and_processor("small", texts=texts, vocab_size=300, **options)
    assert model.config.initializer_range == pytest.approx(expected)
    said = any("from scratch: initializer_range" in record.getMessage() for record in caplog.records)
    assert said == (not options)


def test_pretrain_command_subset_of_tasks_and_bad_arguments(tmp_path):
    image_text, omni = tiny_datasets(8)
    train_file = write_jsonl(image_text, tmp_path / "image_text", ["image"])
    with pytest.raises(SystemExit, match="needs both"):
        main(["pretrain", "--train-file", str(train_file), "--output-dir", str(tmp_path / "x")])
    omni_file = write_jsonl(omni, tmp_path / "omni", ["image", "source_image"])
    with pytest.raises(ValueError, match="Unknown pretraining tasks"):
        main(["pretrain", "--train-file", str(train_file), "--omni-file", str(omni_file), "--tasks", "itc,clip",
              "--steps", "1", "--vocab-size", "300", "--output-dir", str(tmp_path / "y")])


def test_demo_end_to_end_small(tmp_path, capsys):
    results = run_demo(str(tmp_path / "demo"), num_products=60, steps=4, batch_size=8)
    out = capsys.readouterr().out
    assert "query_to_product_recall@10" in out and "Non-learned baselines" in out
    assert results["reload_max_abs_diff"] < 1e-4
    assert (tmp_path / "demo" / "retrieval_examples.png").stat().st_size > 1000
    # the Hub-ready folder publishes and loads with every Auto class its auto_map names (AutoModelForPreTraining
    # too: the config shared with the pretraining model names it)
    loaded = check_publishable_and_loadable([tmp_path / "demo" / "commercemm-tiny-demo"], tmp_path)
    auto_map = loaded[str(tmp_path / "demo" / "commercemm-tiny-demo")]
    assert auto_map["AutoModelForPreTraining"] == "CommerceMMForPreTraining"
    assert set(results["after"]) >= {"query_to_product_mrr", "view_to_product_mrr", "post_to_product_mrr",
                                     "image_to_text_recall@1", "text_to_image_recall@1"}


def test_pretrain_command_takes_every_training_arguments_flag(tmp_path, recorded_pretrain):
    """The knobs of a run at scale (bf16, accumulation, checkpointing, workers, logging, report_to) through the CLI,
    with underscores or dashes; the recipe's defaults hold for the rest; an unknown flag is an error."""
    trainers, train_file, omni_file = recorded_pretrain
    main(["pretrain", "--train-file", str(train_file), "--omni-file", str(omni_file), "--batch-size", "2",
          "--steps", "2", "--vocab-size", "300", "--output-dir", str(tmp_path / "out"), "--bf16",
          "--gradient_accumulation_steps", "2", "--gradient-checkpointing", "--dataloader_num_workers", "1",
          "--logging_steps", "1", "--report_to", "none", "--use_cpu"])
    args = trainers[0].args
    assert args.bf16 and args.gradient_accumulation_steps == 2 and args.gradient_checkpointing
    assert args.dataloader_num_workers == 1 and args.logging_steps == 1 and args.report_to == []
    assert args.max_steps == 2 and args.per_device_train_batch_size == 2 and args.save_total_limit == 1
    logged = [row for row in trainers[0].state.log_history if "loss" in row]
    assert len(logged) == 2 and all(row["itc_loss"] > 0 for row in logged)
    with pytest.raises(SystemExit):
        main(["pretrain", "--output-dir", str(tmp_path / "x"), "--not_a_training_flag", "3"])
    # one vocabulary: the example scripts' spellings are the command's own flags
    from commercemm_hf.cli import parse_arguments

    scripts = parse_arguments(["pretrain", "--output_dir", "x", "--train_file", "a.jsonl", "--omni_file", "b.jsonl",
                               "--model_name_or_path", "small", "--tokenizer_name", "tok", "--text_backbone", "minilm",
                               "--max_steps", "7", "--per_device_train_batch_size", "3", "--seed", "5"])
    assert (scripts.output_dir, scripts.train_file, scripts.omni_file, scripts.preset, scripts.tokenizer,
            scripts.text_backbone, scripts.seed) == ("x", "a.jsonl", "b.jsonl", "small", "tok", "minilm", 5)
    assert scripts.training_arguments == {"max_steps": 7, "per_device_train_batch_size": 3}
    assert parse_arguments(["pretrain", "--model_name_or_path", "outputs/m"]).model == "outputs/m"
    with pytest.raises(SystemExit):  # a preset and a folder at once
        parse_arguments(["pretrain", "--preset", "small", "--model_name_or_path", "outputs/m"])
    with pytest.raises(SystemExit):
        main(["demo", "--bf16"])



def test_pretrain_command_changes_the_preset_and_augments_both_streams(tmp_path, recorded_pretrain):
    """`--config-overrides` / `--augment` (the example scripts' flags, in the command's spelling) reach the model and
    the pretraining trainer's collators; with `--model` the overrides are refused."""
    trainers, train_file, omni_file = recorded_pretrain
    main(["pretrain", "--train-file", str(train_file), "--omni-file", str(omni_file), "--batch-size", "2",
          "--steps", "1", "--vocab-size", "300", "--output-dir", str(tmp_path / "out"), "--augment",
          "--augment-flip", "0", "--config_overrides",
          "vision_config.image_size=32,vision_config.num_hidden_layers=2,image_depth_choices=[1,2]"])
    folder = tmp_path / "out" / "model"
    trainer = trainers[0]
    config = trainer.model.config
    assert (config.vision_config.image_size, config.vision_config.num_hidden_layers) == (32, 2)
    assert trainer.data_collator.augment.flip == 0 and trainer.omni_collator.augment is trainer.data_collator.augment
    assert all(collator.augment is None for collator in trainer.eval_collators)
    assert (folder / "config.json").is_file()
    with pytest.raises(SystemExit, match="--config-overrides changes a preset"):
        main(["pretrain", "--train-file", str(train_file), "--omni-file", str(omni_file), "--model", str(folder),
              "--config-overrides", "projection_dim=8", "--output-dir", str(tmp_path / "again")])


@pytest.mark.parametrize("load, expected", [(0.1, 2), (0.9, 1), (1.6, 1), (7.0, 1)])
def test_default_threads_leave_the_busy_cores_to_other_jobs(monkeypatch, load, expected):
    import os

    from commercemm_hf.cli import default_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    threads, why = default_threads()
    assert threads == expected and "2 cores" in why


def test_threads_option_and_omp_num_threads_are_respected(monkeypatch, capsys):
    import torch

    from commercemm_hf.cli import configure_threads

    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert configure_threads(None) == torch.get_num_threads()
        assert "OMP_NUM_THREADS" in capsys.readouterr().out
        with pytest.raises(SystemExit, match="at least 1"):
            configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_preprocessing_and_dataloader_workers_reach_the_check_and_the_loader(tmp_path, monkeypatch):
    """`commercemm pretrain --preprocessing-num-workers N` and the example scripts' `--preprocessing_num_workers N`
    are the checks' `datasets.map(num_proc=N)`; `--dataloader-num-workers` goes to TrainingArguments."""
    from commercemm_hf.cli import _load_rows, parse_arguments
    from commercemm_hf.data import loading
    from commercemm_hf.training.finetuning import DataArguments, load_splits

    seen = []
    original = loading._load_split
    monkeypatch.setattr(loading, "_load_split",
                        lambda *args, **kwargs: seen.append(args[6]) or original(*args, **kwargs))
    image_text, omni = tiny_datasets(4)
    train_file = write_jsonl(image_text, tmp_path / "image_text", ["image"])
    omni_file = write_jsonl(omni, tmp_path / "omni", ["image", "source_image"])
    args = parse_arguments(["pretrain", "--train-file", str(train_file), "--omni-file", str(omni_file),
                            "--preprocessing-num-workers", "2", "--dataloader-num-workers", "2"])
    assert args.preprocessing_num_workers == 2 and args.training_arguments == {"dataloader_num_workers": 2}
    rows, omni_rows, _ = _load_rows(args)
    assert seen == [2, 2] and len(rows) == 4 and len(omni_rows) == 12
    splits, _ = load_splits(DataArguments(train_file=str(train_file), preprocessing_num_workers=2),
                            loading.load_image_text_dataset)
    assert seen[-1] == 2 and len(splits["train"]) == 4
    assert parse_arguments(["pretrain"]).preprocessing_num_workers is None
