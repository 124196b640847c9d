"""Fine-tuning through the example scripts on data at the edges (issue 14): image-only rows from a preset, files
whose rows are all bad or that are empty, and a disk that fills up at a checkpoint."""

import warnings

import pytest
from PIL import Image


def _argv(train_file, output_dir, *extra):
    return ["--model_name_or_path", "tiny", "--train_file", str(train_file), "--validation_file", str(train_file),
            "--image_column", "photo", "--label_column", "category", "--output_dir", str(output_dir),
            "--max_steps", "1", "--per_device_train_batch_size", "4", "--report_to", "none",
            "--disable_tqdm", "true", *map(str, extra)]


def test_image_only_rows_fine_tune_from_a_preset(run_categorization_main, image_label_rows, tmp_path):
    from transformers import pipeline

    metrics = run_categorization_main(_argv(image_label_rows, tmp_path / "out"))
    assert "eval_accuracy" in metrics
    classify = pipeline("product-categorization", model=str(tmp_path / "out"), trust_remote_code=True)
    results = classify(Image.new("RGB", (16, 16), "red"), top_k=2)
    assert sorted(result["label"] for result in results) == ["lamp", "mug"]


def test_a_file_whose_rows_are_all_bad_is_named_before_training(run_categorization_main, image_label_rows, tmp_path):
    for path in image_label_rows.parent.glob("*.png"):
        path.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"No usable rows .*train.jsonl: all 8 rows are bad.*image file not found"):
            run_categorization_main(_argv(image_label_rows, tmp_path / "out"))


def test_an_empty_training_file_is_named(run_categorization_main, image_label_rows, tmp_path):
    empty = image_label_rows.parent / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"--train_file .*empty.jsonl holds no rows"):
        run_categorization_main(_argv(image_label_rows, tmp_path / "out", "--train_file", empty))


def test_a_full_disk_at_a_checkpoint_says_no_space_left(run_categorization_main, image_label_rows, small_disk):
    with pytest.raises(OSError, match=r"No space left on device while saving the checkpoint to .*small-disk") as error:
        run_categorization_main(_argv(image_label_rows, small_disk / "out", "--save_strategy", "steps",
                                      "--save_steps", "1"))
    assert error.value.errno == 28


def test_torch_writer_failure_on_a_full_disk_says_no_space_left(small_disk):
    import torch

    from commercemm_hf.training.disk_space import disk_full_named

    with pytest.raises(OSError, match=r"No space left on device while saving the optimizer state to .*small-disk"):
        with disk_full_named(small_disk, "optimizer state"):
            torch.save({"state": torch.zeros(2**20)}, small_disk / "optimizer.pt")  # 4 MiB onto 1 MiB
    with pytest.raises(ValueError, match="not about space"):
        with disk_full_named(small_disk):
            raise ValueError("not about space")


def test_config_overrides_and_product_embedding_flags_name_what_is_wrong(tmp_path):
    """`--config_overrides` (transformers' example-script flag) and `--product_embedding`: bad values are named."""
    from commercemm_hf.training import finetuning as ft

    assert ft.parse_config_overrides("image_depth_choices=[2,4],multimodal_config.num_hidden_layers=2,x=abc") == {
        "image_depth_choices": [2, 4], "multimodal_config": {"num_hidden_layers": 2}, "x": "abc"}
    assert ft.parse_config_overrides(None) == {} and ft.parse_config_overrides(" ") == {}
    with pytest.raises(ValueError, match="'projection_dim' is not key=value"):
        ft.parse_config_overrides("projection_dim")
    with pytest.raises(ValueError, match="more than one level deep"):
        ft.parse_config_overrides("text_config.a.b=1")
    with pytest.raises(ValueError, match="both as a value and as a sub-config"):
        ft.parse_config_overrides("text_config=1,text_config.pooling=mean")
    # an unknown field reaches the config, which names it
    with pytest.raises(Exception, match="pooling must be 'cls' or 'mean'"):
        ft.load_model_and_processor(ft.ModelArguments(config_overrides="text_config.pooling=max"), ft_model(),
                                    lambda: ["red mug"] * 4)
    with pytest.raises(ValueError, match="changes a preset's architecture; .* is a saved model"):
        ft.load_model_and_processor(ft.ModelArguments(model_name_or_path=str(tmp_path), config_overrides="a=1"),
                                    ft_model())
    assert ft.RetrievalArguments(task="image_to_product", product_embedding="image").retrieval_kinds() == (
        "image", "image")
    assert ft.RetrievalArguments(task="image_to_text").retrieval_kinds() == ("image", "text")
    with pytest.raises(ValueError, match="--product_embedding applies to the \\*_to_product tasks, not to "
                                         "'text_to_image'"):
        ft.RetrievalArguments(task="text_to_image", product_embedding="text").retrieval_kinds()


def ft_model():
    from commercemm_hf import CommerceMMForRetrieval

    return CommerceMMForRetrieval


def test_do_train_alone_needs_no_validation_and_a_missing_split_stops_before_training(
        run_categorization_main, image_label_rows, tmp_path):
    """`--do_train` alone without validation rows trains and saves (it used to stop after training, on the
    validation split it was not asked to evaluate, before the folder was saved); `--do_predict` without test rows
    stops before training, not after."""
    argv = ["--model_name_or_path", "tiny", "--train_file", str(image_label_rows), "--image_column", "photo",
            "--label_column", "category", "--max_steps", "1", "--per_device_train_batch_size", "4",
            "--report_to", "none", "--disable_tqdm", "true", "--validation_split_percentage", "0"]
    metrics = run_categorization_main([*argv, "--output_dir", str(tmp_path / "alone"), "--do_train"])
    assert "train_loss" in metrics and not any(key.startswith("eval_") for key in metrics)
    assert (tmp_path / "alone" / "config.json").is_file()
    with pytest.raises(ValueError, match="--do_predict needs test rows"):
        run_categorization_main([*argv, "--output_dir", str(tmp_path / "predict"), "--do_train", "--do_predict"])
    assert not (tmp_path / "predict" / "train_results.json").exists()
