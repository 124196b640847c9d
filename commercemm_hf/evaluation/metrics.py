"""Categorization metrics as `evaluate` modules that work offline.

`evaluate.load("accuracy")` fetches its script from the Hugging Face Hub, which a machine without network (or a CI
job) cannot reach. These modules are `evaluate.Metric` subclasses defined in the package, so they keep evaluate's
machinery (`add_batch`, `compute`, the distributed gathering of predictions) without a download.

* multi-class: `accuracy` and `macro_f1` (the unweighted mean of the per-class F1 over the classes seen in the
  references or the predictions);
* multi-label (0/1 rows): `accuracy` is exact match of the whole label set, `macro_f1` averages each label's F1 over
  the labels that occur in the references or predictions, `micro_f1` pools all decisions.

Example:
    >>> from commercemm_hf.evaluation.metrics import categorization_metrics
    >>> categorization_metrics([0, 1, 1], [0, 1, 0])
    {'accuracy': 0.6666666666666666, 'macro_f1': 0.6666666666666666}
    >>> categorization_metrics([[1, 0], [1, 1]], [[1, 0], [1, 0]], multi_label=True)["accuracy"]
    0.5
"""

import datasets
import evaluate
import numpy as np


def _f1_per_label(true_positive, predicted, actual) -> np.ndarray:
    # F1 = 2TP / (predicted + actual); a label never predicted nor present is left out by the caller
    return 2.0 * true_positive / np.maximum(predicted + actual, 1)


class CategorizationMetric(evaluate.Metric):
    """Accuracy and macro-F1 of multi-class predictions (class ids), computed without downloading anything."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy and macro-F1 of single-label (multi-class) predictions.",
            citation="", inputs_description="predictions, references: class ids",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        predictions, references = np.asarray(predictions), np.asarray(references)
        if len(references) == 0:
            raise ValueError("No predictions to score: the evaluation split is empty.")
        labels = np.union1d(predictions, references)
        hits = predictions[:, None] == labels[None, :]
        truth = references[:, None] == labels[None, :]
        f1 = _f1_per_label((hits & truth).sum(0), hits.sum(0), truth.sum(0))
        return {"accuracy": float((predictions == references).mean()), "macro_f1": float(f1.mean())}


class MultiLabelCategorizationMetric(evaluate.Metric):
    """Exact-match accuracy, macro-F1 and micro-F1 of multi-label predictions (0/1 rows)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Exact-match accuracy, macro-F1 and micro-F1 of multi-label predictions.",
            citation="", inputs_description="predictions, references: 0/1 lists of one length (the label count)",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("int8")),
                                        "references": datasets.Sequence(datasets.Value("int8"))}),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        predictions, references = np.asarray(predictions, dtype=bool), np.asarray(references, dtype=bool)
        if predictions.ndim != 2 or predictions.shape != references.shape or len(references) == 0:
            raise ValueError(f"Multi-label predictions and references must be non-empty (n, num_labels) 0/1 arrays "
                             f"of one shape; got {predictions.shape} and {references.shape}.")
        true_positive = (predictions & references).sum(0)
        predicted, actual = predictions.sum(0), references.sum(0)
        seen = (predicted + actual) > 0
        macro = _f1_per_label(true_positive, predicted, actual)[seen].mean() if seen.any() else 0.0
        micro = _f1_per_label(true_positive.sum(), predicted.sum(), actual.sum())
        return {"accuracy": float((predictions == references).all(1).mean()), "macro_f1": float(macro),
                "micro_f1": float(micro)}


def categorization_metrics(predictions, references, multi_label: bool = False) -> dict[str, float]:
    """Accuracy and macro-F1 (plus micro-F1 for multi-label) of `predictions` against `references`.

    Multi-class: both are sequences of class ids. Multi-label: both are `(n, num_labels)` 0/1 arrays.

    Example:
        >>> categorization_metrics([2, 2], [2, 0])["accuracy"]
        0.5
    """
    metric = MultiLabelCategorizationMetric() if multi_label else CategorizationMetric()
    predictions, references = np.asarray(predictions), np.asarray(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references.")
    if multi_label:
        predictions, references = predictions.astype(np.int8), references.astype(np.int8)
    return metric.compute(predictions=predictions.tolist(), references=references.tolist())


__all__ = ["CategorizationMetric", "MultiLabelCategorizationMetric", "categorization_metrics"]
