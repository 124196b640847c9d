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


# ------------------------------------------------------------------------- calls, ids and items a test suite tries


@pytest.mark.parametrize("task", ["product-embedding", "product-categorization"])
def test_a_call_on_an_empty_list_answers_an_empty_list_and_a_bad_item_is_named_by_position(pipeline_input_folders,
                                                                                          task):
    folder = pipeline_input_folders / ("base" if task == "product-embedding" else "categorization")
    run = pipeline(task, model=str(folder), trust_remote_code=True)
    assert run([]) == []
    with pytest.raises(ValueError, match=r"^item 2: cannot read a pipeline input of type NoneType"):
        run(["red mug", {"text": "blue lamp"}, None])
    with pytest.raises(ValueError, match=r"^item 1: 'text' must be a string, got int"):
        run(["red mug", {"text": 5}])


def test_search_names_bad_queries_and_product_lists(pipeline_input_folders):
    search = pipeline("product-search", model=str(pipeline_input_folders / "base"), trust_remote_code=True)
    with pytest.raises(TypeError, match="products must be a list .*got a single str: wrap it in a list"):
        search.index_products("red mug", product_kind="text")  # would index the letters r, e, d, ...
    with pytest.raises(ValueError, match=r"product_ids\[1\] is None: each product needs a non-empty id"):
        search.index_products(["red mug", "lamp", "desk"], product_ids=["a", None, "c"], product_kind="text")
    with pytest.raises(ValueError, match=r"Product id 'a' is given twice \(products 0 and 2\)"):
        search.index_products(["red mug", "lamp", "desk"], product_ids=["a", "b", "a"], product_kind="text")
    with pytest.raises(TypeError, match=r"product_ids\[0\] is 1.5 \(float\)"):
        search.index_products(["red mug"], product_ids=[1.5], product_kind="text")
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        search.index_products(["red mug"], product_kind="text", batch_size=0)
    with pytest.raises(TypeError, match=r"Unknown arguments for indexing products: \['top_k'\]"):
        search.index_products(["red mug"], product_kind="text", top_k=3)
    search.index_products(["red mug", "blue lamp"], product_ids=["p0", "p1"], product_kind="text")
    assert search([]) == []
    with pytest.raises(ValueError, match=r"^item 1: cannot read a pipeline input of type int"):
        search(["red mug", 7])


def test_add_skips_bad_items_and_names_them_or_raises(pipeline_input_folders, caplog):
    search = pipeline("product-search", model=str(pipeline_input_folders / "base"), trust_remote_code=True)
    search.index_products(["red mug", "blue lamp"], product_kind="text")
    missing = str(pipeline_input_folders / "missing.png")
    with caplog.at_level(logging.WARNING):
        index = search.add(["oak desk", None, {"image": missing}, "wooden vase"])
    assert index.product_ids == ["0", "1", "2", "5"]
    assert [(row["index"], row["product_id"]) for row in search.skipped_products] == [(1, "3"), (2, "4")]
    assert "product 2 (id '4'): cannot read the image" in search.skipped_products[1]["reason"]
    assert any("Skipped 2 of 4 products" in message for message in warnings_of(caplog))
    with pytest.raises(ValueError, match=r"product 1 \(id 'q'\): cannot read a pipeline input of type int"):
        search.add(["steel lamp", 5], product_ids=["p", "q"], on_bad_items="raise")
    with pytest.raises(TypeError, match="got a single str"):
        search.add("steel lamp")
    assert search.add([]) is index and len(index) == 4  # nothing to add: the index is unchanged


def test_an_empty_image_is_skipped_and_named_not_a_failure_of_the_whole_catalog(pipeline_input_folders):
    from PIL import Image

    search = pipeline("product-search", model=str(pipeline_input_folders / "base"), trust_remote_code=True)
    good = str(pipeline_input_folders / "good_0.png")
    index = search.index_products([{"image": good, "text": "red mug"}, {"image": Image.new("RGB", (0, 0)), "text": "x"},
                                   {"image": good, "text": "blue mug"}], product_ids=["a", "b", "c"])
    assert index.product_ids == ["a", "c"]
    assert search.skipped_products[0]["reason"].endswith("product 1 (id 'b'): the image '(an in-memory PIL image)' "
                                                         "is empty (0x0 pixels).")


def test_top_k_takes_numpy_integers_and_refuses_booleans(pipeline_input_folders):
    import numpy as np

    classify = pipeline("product-categorization", model=str(pipeline_input_folders / "categorization"),
                        trust_remote_code=True)
    assert len(classify("red mug", top_k=np.int64(2))) == 2
    assert len(classify("red mug", top_k=100)) == 2  # every label, however many were asked for
    for bad in (True, 0, -1, 2.0, "2"):
        with pytest.raises(ValueError, match=rf"top_k must be a positive integer, got {bad!r}"):
            classify("red mug", top_k=bad)
    search = pipeline("product-search", model=str(pipeline_input_folders / "base"), trust_remote_code=True)
    search.index_products(["red mug", "blue lamp", "oak desk"], product_kind="text")
    assert len(search("mug", top_k=np.int64(2))) == 2 and len(search("mug", top_k=50)) == 3
    with pytest.raises(ValueError, match="top_k must be a positive integer, got True"):
        search("mug", top_k=True)


def test_a_pathlib_path_is_an_image_path(pipeline_input_folders):
    embed = pipeline("product-embedding", model=str(pipeline_input_folders / "base"), trust_remote_code=True)
    path = pipeline_input_folders / "good_0.png"
    assert embed({"image": path})["image_embeds"] == embed({"image": str(path)})["image_embeds"]
    with pytest.raises(ValueError, match=r"cannot read the image '.*missing.png': no such file"):
        embed({"image": pipeline_input_folders / "missing.png"})
