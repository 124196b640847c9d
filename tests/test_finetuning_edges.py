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
