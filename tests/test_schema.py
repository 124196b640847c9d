"""The row schema module (`commercemm_hf.data.schema`): the names restated in remote code agree with it, the
direction metrics carry the fine-tuning task names and stay readable under their old names, and the converters and
`undecoded` behave as loading and the demo expect."""

import math

import pytest
from datasets import Dataset, Features, Image, List, Value
from helpers import tiny_config

from commercemm_hf import CommerceMMModel
from commercemm_hf.data import demo_catalog
from commercemm_hf.data.schema import (
    DIRECTIONS,
    OLD_DIRECTION_NAMES,
    SOURCE_TYPES,
    TASK_SOURCE_TYPE,
    direction_metric,
    to_image_text_rows,
    to_omni_rows,
    undecoded,
    with_old_direction_names,
    without_old_direction_names,
)
from commercemm_hf.evaluation.downstream import downstream_table
from commercemm_hf.hub import save_hub_folder
from commercemm_hf.model_card import render_model_card
from commercemm_hf.modeling.configuration_commercemm import OMNI_SOURCE_TYPES
from commercemm_hf.modeling.modeling_commercemm_tasks import RETRIEVAL_TASKS
from commercemm_hf.training import finetuning
from commercemm_hf.training.recipes import ablation_table, mean_omni_recall_at_10


def test_remote_code_restates_the_schema_names_exactly():
    # modeling/ may not import the schema module, so it restates these names: they must not drift apart
    assert OMNI_SOURCE_TYPES == SOURCE_TYPES == ("query", "view", "post")
    for direction in DIRECTIONS:
        assert RETRIEVAL_TASKS[direction.name] == (direction.source_kind, "multimodal"), direction
    assert finetuning.TASK_SOURCE_TYPE is TASK_SOURCE_TYPE
    assert set(TASK_SOURCE_TYPE) == {"query_to_product", "image_to_product", "product_to_product"}


def test_direction_metrics_are_written_under_both_names_and_read_from_either():
    new = {"query_to_product_recall@10": 0.2, "image_to_product_recall@10": 0.6, "product_to_product_recall@10": 0.4}
    both = with_old_direction_names(new)
    assert both["view_to_product_recall@10"] == 0.6 and both["post_to_product_recall@10"] == 0.4
    assert set(both) - set(new) == {f"{old}_recall@10" for old in OLD_DIRECTION_NAMES}
    assert without_old_direction_names(both) == new
    # results written before the rename hold only the old names: still read, and kept by the filter
    old = {"query_to_product_recall@10": 0.2, "view_to_product_recall@10": 0.6, "post_to_product_recall@10": 0.4}
    assert without_old_direction_names(old) == old
    assert direction_metric(old, "image_to_product", "recall@10") == 0.6
    assert math.isnan(direction_metric(old, "image_to_product", "mrr"))
    assert mean_omni_recall_at_10(old) == pytest.approx(0.4) == mean_omni_recall_at_10(both)
    assert "nan" not in ablation_table({"full": {**old, "mean_omni_recall@10": 0.4, "image_to_text_recall@10": 0.5,
                                                 "text_to_image_recall@10": 0.5}})


def test_downstream_table_and_model_card_show_each_direction_once(tmp_path, processor, tokenizer):
    metrics = with_old_direction_names({"image_to_product_recall@1": 0.25, "image_to_product_recall@10": 0.5,
                                        "image_to_product_mrr": 0.375})
    table = downstream_table({"zero-shot": metrics})
    assert table.count("recall@1 ") == 1 and "image_to_product/view_to_product recall@1" in table
    folder = save_hub_folder(CommerceMMModel(tiny_config(vocab_size=len(tokenizer))), processor, tmp_path / "m")
    text = render_model_card(folder, "org/commercemm-tiny", metrics={"before": metrics, "after": metrics}).text
    assert "| image_to_product_mrr | 0.3750 | 0.3750 |" in text and "view_to_product" not in text


def test_converters_name_the_missing_columns():
    rows = Dataset.from_dict({"product_id": ["a"], "text": ["Red mug"]})
    with pytest.raises(ValueError, match=r"to_omni_rows needs demo catalog rows with column\(s\) \['image', 'queries'"):
        to_omni_rows(rows)
    with pytest.raises(ValueError, match=r"to_image_text_rows needs .*\['image', 'label', 'attribute_labels'\]"):
        to_image_text_rows(rows)


def test_undecoded_casts_image_columns_once_and_leaves_the_rest():
    features = Features(
        {"image": Image(), "views": List(Image()), "done": Image(decode=False), "text": Value("string")}
    )
    rows = Dataset.from_dict({"image": [None], "views": [[]], "done": [None], "text": ["a"]}, features=features)
    cast = undecoded(rows, ["image", "views", "done", "text", "absent"])
    assert not cast.features["image"].decode and not cast.features["views"].feature.decode
    assert cast.features["text"] == Value("string")
    untouched = undecoded(rows, ["done", "text", "absent"])
    assert untouched._fingerprint == rows._fingerprint  # no cast, no pass over the data


def test_old_import_paths_keep_working():
    from commercemm_hf.data import to_omni_rows as from_package
    from commercemm_hf.training.collators import stable_id

    assert demo_catalog.to_omni_rows is from_package is to_omni_rows
    assert demo_catalog.OMNI_FEATURES["source_image"] == Image()
    assert stable_id("demo-00001") == stable_id("demo-00001") != stable_id("demo-00002")
