"""The validation hold-out of the example scripts takes the documented share: exactly `validation_split_percentage` of
the products (rounded, at least one) for retrieval, of the rows for categorization, never a product on both sides."""

import pytest
from datasets import Dataset, DatasetDict

from commercemm_hf.training.finetuning import hold_out_validation


@pytest.mark.parametrize("num_products, percentage, expected", [(12, 10, 1), (40, 10, 4), (12, 25, 3), (3, 10, 1)])
def test_retrieval_holds_out_exactly_the_share_of_products(num_products, percentage, expected):
    rows = Dataset.from_dict({"product_id": [f"p{i % num_products}" for i in range(3 * num_products)]})
    splits = hold_out_validation(DatasetDict({"train": rows}), percentage, seed=0, group_column="product_id")
    held, kept = set(splits["validation"]["product_id"]), set(splits["train"]["product_id"])
    assert len(held) == expected and not held & kept and len(held | kept) == num_products
    again = hold_out_validation(DatasetDict({"train": rows}), percentage, seed=0, group_column="product_id")
    assert set(again["validation"]["product_id"]) == held  # deterministic for a seed


def test_categorization_holds_out_the_share_of_rows():
    rows = Dataset.from_dict({"text": [str(i) for i in range(40)]})
    splits = hold_out_validation(DatasetDict({"train": rows}), 10, seed=0)
    assert len(splits["validation"]) == 4 and len(splits["train"]) == 36
