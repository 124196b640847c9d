"""Trivial retrieval baselines on the demo catalog, to show what a model must beat.

* colour histogram: a joint RGB histogram of the whole picture (Hellinger-normalised, cosine similarity), for
  other view -> product and tagged post -> product retrieval;
* bag of words: TF-IDF of lower-cased word tokens (cosine similarity), for query -> product-text retrieval.

Metrics come from `commercemm_hf.evaluation.retrieval_metrics` (pessimistic tie-breaking), with each product as one
candidate.

Example:
    >>> from commercemm_hf.data.demo_catalog import build_demo_catalog
    >>> from commercemm_hf.data.baselines import demo_baselines
    >>> catalog = build_demo_catalog(num_products=40, seed=0, split_fractions=(1.0, 0.0, 0.0))
    >>> sorted(demo_baselines(catalog["train"]))
    ['post_to_product_colour_histogram', 'query_to_product_tfidf', 'view_to_product_colour_histogram']
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from datasets import Dataset

from ..evaluation.retrieval import retrieval_metrics


_TOKEN = re.compile(r"\w+", re.UNICODE)


def colour_histograms(images: Iterable, bins: int = 8) -> torch.Tensor:
    """`(n, bins**3)` joint RGB histograms of PIL images, square-rooted and L2-normalised (Hellinger embedding).

    Example:
        >>> from PIL import Image
        >>> colour_histograms([Image.new("RGB", (4, 4), "red")]).shape
        torch.Size([1, 512])
    """
    rows = []
    for image in images:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int64).reshape(-1, 3) * bins // 256
        codes = (pixels[:, 0] * bins + pixels[:, 1]) * bins + pixels[:, 2]
        counts = np.bincount(codes, minlength=bins**3).astype(np.float32)
        rows.append(np.sqrt(counts / max(1.0, counts.sum())))
    if not rows:
        return torch.zeros(0, bins**3)
    return torch.nn.functional.normalize(torch.from_numpy(np.stack(rows)), dim=-1)


def tokenize(text: str) -> list[str]:
    """Lower-cased unicode word tokens.

    Example:
        >>> tokenize("Acme Rucksack, grün!")
        ['acme', 'rucksack', 'grün']
    """
    return _TOKEN.findall((text or "").lower())


def tfidf_scores(queries: Sequence[str], documents: Sequence[str]) -> torch.Tensor:
    """`(len(queries), len(documents))` cosine similarities of TF-IDF vectors (IDF from `documents`; words that
    no document has are ignored).

    Example:
        >>> tfidf_scores(["red mug"], ["red mug", "blue lamp"]).argmax().item()
        0
    """
    doc_tokens = [Counter(tokenize(text)) for text in documents]
    vocabulary = {word: i for i, word in enumerate(sorted({w for counts in doc_tokens for w in counts}))}
    document_frequency = np.zeros(len(vocabulary), np.float32)
    for counts in doc_tokens:
        document_frequency[[vocabulary[w] for w in counts]] += 1
    idf = np.log((1 + len(documents)) / (1 + document_frequency)) + 1.0

    def vectors(token_counts: list[Counter]) -> torch.Tensor:
        matrix = np.zeros((len(token_counts), len(vocabulary)), np.float32)
        for row, counts in enumerate(token_counts):
            for word, count in counts.items():
                if word in vocabulary:
                    matrix[row, vocabulary[word]] = count
        return torch.nn.functional.normalize(torch.from_numpy(matrix * idf), dim=-1)

    return vectors([Counter(tokenize(text)) for text in queries]) @ vectors(doc_tokens).t()


def _sources(catalog: Dataset, column: str) -> tuple[list, torch.Tensor]:
    """Flatten a list column of the catalog, with each item's product row as its gold index."""
    items, gold = [], []
    for row, values in enumerate(catalog[column]):
        items.extend(values)
        gold.extend([row] * len(values))
    return items, torch.tensor(gold, dtype=torch.long)


def colour_histogram_retrieval(catalog: Dataset, source_column: str = "views", bins: int = 8,
                               ks=(1, 5, 10)) -> dict[str, float]:
    """Retrieve each product's `source_column` images ("views" or "posts") among all product images by colour
    histogram similarity.

    Example:
        >>> from commercemm_hf.data.demo_catalog import build_demo_catalog
        >>> catalog = build_demo_catalog(num_products=30, seed=0)["train"]
        >>> 0.0 <= colour_histogram_retrieval(catalog)["recall@1"] <= 1.0
        True
    """
    images, gold = _sources(catalog, source_column)
    scores = colour_histograms(images, bins) @ colour_histograms(catalog["image"], bins).t()
    return retrieval_metrics(scores, gold, ks=ks)


def bag_of_words_retrieval(catalog: Dataset, ks=(1, 5, 10), languages: Sequence[str] | None = None
                           ) -> dict[str, float]:
    """Retrieve each product's search queries among all product texts by TF-IDF cosine similarity; `languages`
    keeps only queries in those languages (all by default).

    Example:
        >>> from commercemm_hf.data.demo_catalog import build_demo_catalog
        >>> catalog = build_demo_catalog(num_products=30, seed=0)["train"]
        >>> 0.0 <= bag_of_words_retrieval(catalog, languages=["en"])["mrr"] <= 1.0
        True
    """
    queries, gold = _sources(catalog, "queries")
    if languages is not None:
        query_languages, _ = _sources(catalog, "query_languages")
        keep = [i for i, language in enumerate(query_languages) if language in set(languages)]
        queries, gold = [queries[i] for i in keep], gold[keep]
    return retrieval_metrics(tfidf_scores(queries, list(catalog["text"])), gold, ks=ks)


def demo_baselines(catalog: Dataset, ks=(1, 5, 10)) -> dict[str, dict[str, float]]:
    """All baselines on one split of the demo catalog: `{task_name: metrics}`.

    Example:
        >>> from commercemm_hf.data.demo_catalog import build_demo_catalog
        >>> results = demo_baselines(build_demo_catalog(num_products=30, seed=0)["train"])
        >>> sorted(results["query_to_product_tfidf"])
        ['mrr', 'ndcg@10', 'recall@1', 'recall@10', 'recall@5']
    """
    return {
        "view_to_product_colour_histogram": colour_histogram_retrieval(catalog, "views", ks=ks),
        "post_to_product_colour_histogram": colour_histogram_retrieval(catalog, "posts", ks=ks),
        "query_to_product_tfidf": bag_of_words_retrieval(catalog, ks=ks),
    }


__all__ = [
    "bag_of_words_retrieval", "colour_histogram_retrieval", "colour_histograms", "demo_baselines", "tfidf_scores",
    "tokenize",
]
