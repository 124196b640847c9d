"""Moved to `commercemm_hf.evaluation.baselines`; this module re-exports it so old imports keep working.

Example:
    >>> from commercemm_hf.data.baselines import tfidf_scores
    >>> tfidf_scores(["red mug"], ["red mug", "blue lamp"]).argmax().item()
    0
"""

from ..evaluation.baselines import *  # noqa: F401,F403
from ..evaluation.baselines import __all__  # noqa: F401
