"""Offline categorization metrics (accuracy, macro-F1, micro-F1) against hand-computed values."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commercemm_hf.evaluation import categorization_metrics


def reference_macro_f1(predictions, references):
    scores = []
    for label in sorted(set(predictions) | set(references)):
        tp = sum(p == label and r == label for p, r in zip(predictions, references))
        predicted, actual = predictions.count(label), references.count(label)
        scores.append(2 * tp / (predicted + actual))
    return sum(scores) / len(scores)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=30))
def test_multi_class_matches_the_definition(pairs):
    predictions, references = [p for p, _ in pairs], [r for _, r in pairs]
    metrics = categorization_metrics(predictions, references)
    assert metrics["accuracy"] == pytest.approx(np.mean(np.array(predictions) == np.array(references)))
    assert metrics["macro_f1"] == pytest.approx(reference_macro_f1(predictions, references))


def test_multi_label_exact_match_macro_and_micro():
    references = [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    predictions = [[1, 0, 1], [0, 1, 1], [0, 0, 0]]
    metrics = categorization_metrics(predictions, references, multi_label=True)
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    # label 0: tp 1, predicted 1, actual 2 -> 2/3; label 1: 1; label 2: tp 1, predicted 2, actual 1 -> 2/3
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert metrics["micro_f1"] == pytest.approx(2 * 3 / (4 + 4))


def test_mismatched_or_empty_inputs_are_errors():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        categorization_metrics([0, 1], [0])
    with pytest.raises(ValueError, match="same shape|one shape"):
        categorization_metrics([[1, 0]], [[1, 0, 0]], multi_label=True)
