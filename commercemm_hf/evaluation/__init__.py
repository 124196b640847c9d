"""Evaluation helpers: categorization metrics that work offline (`metrics.py`), retrieval metrics with pessimistic
tie-breaking (`retrieval.py`), zero-shot retrieval of a CommerceMM model (`zero_shot.py`) and the 7 downstream tasks
(`downstream.py`).

Example:
    >>> import torch
    >>> from commercemm_hf.evaluation import retrieval_metrics
    >>> retrieval_metrics(torch.eye(3), torch.arange(3), ks=(1,))["recall@1"]
    1.0
"""

from .metrics import categorization_metrics
from .retrieval import embedding_retrieval_metrics, gold_ranks, relevant_in_rank_order, retrieval_metrics


__all__ = [
    "categorization_metrics",
    "embedding_retrieval_metrics",
    "gold_ranks",
    "relevant_in_rank_order",
    "retrieval_metrics",
]
