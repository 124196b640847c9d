"""Inputs a new user gets wrong, through the pipelines: unreadable or missing images (skipped and named, or raised),
empty and over-long texts (warned once per call, with counts), and a head given fewer modalities than it was
trained on (warned)."""

import json
import logging

import pytest
import torch
from helpers import run_without_package, tiny_config
from transformers import pipeline


INPUTS_MODULE = "pipeline_commercemm_inputs"  # the logger of the folder's remote code (or of the package)


def warnings_of(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name.endswith(INPUTS_MODULE) and record.levelno == logging.WARNING]


def catalog(pipeline_input_folders) -> list[dict]:
    from PIL import Image

    return [
        {"image": str(pipeline_input_folders / "good_0.png"), "text": "red ceramic mug"},
        {"image": str(pipeline_input_folders / "missing.png"), "text": "blue lamp"},        # no such file
        {"image": str(pipeline_input_folders / "good_1.png"), "text": "green leather backpack"},
        {"image": Image.open(pipeline_input_folders / "truncated.png"), "text": "oak desk"},  # opened lazily, corrupt
        {"image": str(pipeline_input_folders / "good_2.png"), "text": "wooden vase"},
    ]


def test_index_products_skips_unreadable_and_missing_images_and_names_them(pipeline_input_folders, caplog):
    search = pipeline("product-search", model=str(pipeline_input_folders / "base"), trust_remote_code=True)
    with caplog.at_level(logging.WARNING):
        index = search.index_products(catalog(pipeline_input_folders), product_ids=["p0", "p1", "p2", "p3", "p4"],
                                      batch_size=2)
    assert index.product_ids == ["p0", "p2", "p4"]
    skipped = {row["index"]: row for row in search.skipped_products}
    assert sorted(skipped) == [1, 3] and skipped[1]["product_id"] == "p1" and skipped[3]["product_id"] == "p3"
    assert "missing.png" in skipped[1]["reason"] and "no such file" in skipped[1]["reason"]
    assert "truncated.png" in skipped[3]["reason"] and "truncated" in skipped[3]["reason"]
    (warning,) = [message for message in warnings_of(caplog) if message.startswith("Skipped")]
    assert "Skipped 2 of 5 products" in warning and "items [1, 3]" in warning and "'p1'" in warning
    # the kept products are embedded exactly as when indexed alone
    alone = pipeline("product-search", model=str(pipeline_input_folders / "base"), trust_remote_code=True)
    alone.index_products([catalog(pipeline_input_folders)[i] for i in (0, 2, 4)], product_ids=["p0", "p2", "p4"])
    torch.testing.assert_close(index.embeddings, alone.product_index.embeddings)


def test_index_products_on_bad_items_raise_names_the_product_and_the_path(pipeline_input_folders):
    search = pipeline("product-search", model=str(pipeline_input_folders / "base"), trust_remote_code=True)
    with pytest.raises(ValueError, match=r"product 1 \(id 'p1'\): cannot read the image '.*missing.png': no such file"):
        search.index_products(catalog(pipeline_input_folders)[:2], product_ids=["p0", "p1"], on_bad_items="raise")
    with pytest.raises(ValueError, match="on_bad_items must be one of"):
        search.index_products(catalog(pipeline_input_folders)[:1], on_bad_items="ignore")
    with pytest.raises(ValueError, match=r"product 0 \(id '0'\) has no image, which a multimodal index needs"):
        search.index_products([{"text": "a text only"}], on_bad_items="raise")
    with pytest.raises(ValueError, match="None of the 1 products can be embedded: .*missing.png"):
        search.index_products(catalog(pipeline_input_folders)[1:2])


def test_a_single_input_with_a_bad_image_is_an_error_naming_the_path(pipeline_input_folders):
    embed = pipeline("product-embedding", model=str(pipeline_input_folders / "base"), trust_remote_code=True)
    with pytest.raises(ValueError, match="cannot read the image '.*missing.png': no such file"):
        embed({"image": str(pipeline_input_folders / "missing.png"), "text": "blue lamp"})
    with pytest.raises(ValueError, match="cannot read the image '.*truncated.png': OSError"):
        embed({"image": str(pipeline_input_folders / "truncated.png")})
    classify = pipeline("product-categorization", model=str(pipeline_input_folders / "categorization"),
                        trust_remote_code=True)
    with pytest.raises(ValueError, match="cannot read the image '.*truncated.png'"):
        classify({"image": str(pipeline_input_folders / "truncated.png"), "text": "mug"})


def test_empty_and_truncated_texts_are_warned_once_per_call_with_counts(pipeline_input_folders, caplog):
    embed = pipeline("product-embedding", model=str(pipeline_input_folders / "base"), trust_remote_code=True)
    long_text = "striped cotton cushion " * 400  # far beyond the 40 tokens the tiny model reads
    with caplog.at_level(logging.WARNING):
        outputs = embed(["red mug", "   ", long_text, "", long_text,
                         {"image": str(pipeline_input_folders / "good_0.png")}], batch_size=2)
    assert len(outputs) == 6
    messages = warnings_of(caplog)
    assert len(messages) == 2, messages  # one per kind, not one per item
    empty, truncated = messages
    assert "2 of 5 texts of these 6 inputs are empty or whitespace only (items [1, 3])" in empty
    assert "2 of 5 texts of these 6 inputs are longer than the 40 tokens" in truncated and "items [2, 4]" in truncated
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        embed("red mug")
        search = pipeline("product-search", model=str(pipeline_input_folders / "base"), trust_remote_code=True)
        search.index_products([{"image": str(pipeline_input_folders / "good_0.png"), "text": long_text},
                               {"image": str(pipeline_input_folders / "good_1.png"), "text": " "}])
    messages = warnings_of(caplog)
    assert len(messages) == 2, messages
    assert "1 of 2 texts of these 2 products are empty" in messages[0] and "(items [1])" in messages[0]
    assert "1 of 2 texts of these 2 products are longer" in messages[1]


def test_a_head_trained_on_image_and_text_warns_on_inputs_lacking_one(pipeline_input_folders, caplog):
    config = json.loads((pipeline_input_folders / "categorization" / "config.json").read_text())
    assert config["expected_modalities"] == ["image", "text"]
    classify = pipeline("product-categorization", model=str(pipeline_input_folders / "categorization"),
                        trust_remote_code=True)
    image = str(pipeline_input_folders / "good_0.png")
    with caplog.at_level(logging.WARNING):
        classify({"image": image, "text": "red mug"})
    assert not warnings_of(caplog)
    with caplog.at_level(logging.WARNING):
        results = classify([{"image": image}, {"image": image, "text": "red mug"}, "blue lamp"])
    assert len(results) == 3
    messages = warnings_of(caplog)
    assert len(messages) == 2, messages
    assert "trained on image + text inputs, but 1 of these 3 inputs have no image (items [2])" in messages[0]
    assert "1 of these 3 inputs have no text (items [0])" in messages[1]


def test_expected_modalities_are_checked(tokenizer):
    # transformers wraps config validation errors in huggingface_hub's StrictDataclassClassValidationError
    with pytest.raises(Exception, match="expected_modalities must be a non-empty list of 'image' / 'text'"):
        tiny_config(vocab_size=len(tokenizer), expected_modalities=["audio"])


def test_remote_code_skips_bad_images_too(pipeline_input_folders):
    """The same in a fresh process where the package cannot be imported (the pipelines' remote code)."""
    result = run_without_package("""
import json
from transformers import pipeline
search = pipeline("product-search", model="base", trust_remote_code=True)
index = search.index_products([{"image": "good_0.png", "text": "mug"}, {"image": "missing.png", "text": "lamp"}],
                              product_ids=["a", "b"])
print(json.dumps({"ids": index.product_ids, "skipped": search.skipped_products}))
""", pipeline_input_folders)
    assert result["ids"] == ["a"]
    assert result["skipped"][0]["product_id"] == "b" and "missing.png" in result["skipped"][0]["reason"]
