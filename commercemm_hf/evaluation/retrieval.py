"""Retrieval metrics with pessimistic tie-breaking: Recall@k, MRR and nDCG@10, vectorised over queries.

The gold item ranks after every candidate whose score is >= its own (DESIGN.md section 7), so a model that gives
every candidate the same score gets the worst rank, never a perfect Recall@1.

Example:
    >>> import torch
    >>> from commercemm_hf.evaluation import retrieval_metrics
    >>> scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.2, 0.2]])
    >>> retrieval_metrics(scores, torch.tensor([0, 1]), ks=(1,))
    {'recall@1': 0.5, 'mrr': 0.6666666865348816, 'ndcg@10': 0.75}
"""

import torch


def _check_scores(scores: torch.Tensor) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(scores)
    if scores.dim() != 2:
        raise ValueError(f"scores must be (num_queries, num_candidates), got shape {tuple(scores.shape)}.")
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"No queries or no candidates to evaluate (scores of shape {tuple(scores.shape)}).")
    if torch.isnan(scores).any():
        raise ValueError("scores hold NaN values.")
    return scores


def gold_ranks(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's gold candidate, counting every other candidate scored >= it as ahead of it.

    Example:
        >>> import torch
        >>> gold_ranks(torch.tensor([[0.5, 0.5, 0.1]]), torch.tensor([0])).tolist()  # the tie counts against gold
        [2]
    """
    scores = _check_scores(scores)
    gold = torch.as_tensor(gold, device=scores.device)
    if gold.dtype.is_floating_point or gold.dtype == torch.bool:
        raise ValueError(f"gold must hold integer candidate indices, got dtype {gold.dtype}.")
    gold = gold.long()
    if gold.shape != (scores.shape[0],):
        raise ValueError(f"gold must hold one candidate index per query ({scores.shape[0]}), got {tuple(gold.shape)}.")
    if gold.min() < 0 or gold.max() >= scores.shape[1]:
        raise ValueError(f"gold indices must lie in 0..{scores.shape[1] - 1}.")
    gold_scores = scores.gather(1, gold[:, None])
    return (scores >= gold_scores).sum(dim=1)  # includes the gold item itself


def relevant_in_rank_order(scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """`relevance` (bool, queries x candidates) reordered by descending score, with relevant candidates placed
    after irrelevant ones of equal score (pessimistic ties). Column j is True when the item at rank j+1 is
    relevant.

    Example:
        >>> import torch
        >>> relevant_in_rank_order(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[True, False, False]])).tolist()
        [[False, True, False]]
    """
    scores = _check_scores(scores)
    relevance = torch.as_tensor(relevance, device=scores.device)
    if relevance.dtype != torch.bool or relevance.shape != scores.shape:
        raise ValueError(f"relevance must be a bool tensor of shape {tuple(scores.shape)}, got "
                         f"{relevance.dtype} {tuple(relevance.shape)}.")
    # Stable sorts: first put irrelevant before relevant, then order by score; ties keep the first order.
    by_relevance = torch.sort(relevance.to(torch.uint8), dim=1, stable=True).indices
    by_score = torch.sort(scores.gather(1, by_relevance), dim=1, descending=True, stable=True).indices
    return relevance.gather(1, by_relevance.gather(1, by_score))


def _ndcg_discounts(count: int, device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(count, device=device, dtype=torch.float32) + 2.0)


def retrieval_metrics(scores: torch.Tensor, gold: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """`recall@k` for each k, `mrr` and `ndcg@10` of `scores` (queries x candidates, higher is better).

    `gold` is either a LongTensor `(num_queries,)` with each query's one correct candidate, or a bool relevance
    matrix `(num_queries, num_candidates)` for several correct candidates per query. With a relevance matrix,
    `recall@k` is the share of a query's relevant candidates found in its top k, `mrr` uses the first relevant
    candidate and `ndcg@10` uses binary gains; every query needs at least one relevant candidate. Ties are broken
    pessimistically either way: a relevant candidate ranks after every irrelevant one with an equal score.
    All metrics are averaged over queries. For embeddings of a large catalog use `embedding_retrieval_metrics`,
    which never holds the whole score matrix.

    Example:
        >>> import torch
        >>> from commercemm_hf.evaluation import retrieval_metrics
        >>> retrieval_metrics(torch.zeros(4, 4), torch.arange(4))["recall@1"]  # all ties: the worst rank
        0.0
        >>> relevance = torch.tensor([[True, True, False]])
        >>> retrieval_metrics(torch.tensor([[0.9, 0.1, 0.5]]), relevance, ks=(1, 2))["recall@2"]
        0.5
    """
    scores = _check_scores(scores).float()
    gold = torch.as_tensor(gold, device=scores.device)
    return _mean_metrics(_per_query_metrics(scores, gold, ks))


def _per_query_metrics(scores: torch.Tensor, gold: torch.Tensor, ks) -> dict[str, torch.Tensor]:
    """Each metric of each query (not yet averaged), so blocks of queries can be evaluated one at a time."""
    if gold.dtype == torch.bool:
        return _multi_relevant_metrics(scores, gold, ks)
    ranks = gold_ranks(scores, gold).float()
    metrics = {f"recall@{k}": (ranks <= k).float() for k in ks}
    metrics["mrr"] = 1.0 / ranks
    # one relevant item: DCG = 1 / log2(rank + 1) within the top 10, ideal DCG = 1
    metrics["ndcg@10"] = torch.where(ranks <= 10, 1.0 / torch.log2(ranks + 1.0), torch.zeros_like(ranks))
    return metrics


def _mean_metrics(per_query: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(values.mean()) for name, values in per_query.items()}


def _multi_relevant_metrics(scores: torch.Tensor, relevance: torch.Tensor, ks) -> dict[str, torch.Tensor]:
    ordered = relevant_in_rank_order(scores, relevance).float()
    num_relevant = ordered.sum(dim=1)
    if (num_relevant == 0).any():
        missing = torch.nonzero(num_relevant == 0).flatten()[:5].tolist()
        raise ValueError(f"Every query needs at least one relevant candidate; queries {missing} have none.")
    metrics = {f"recall@{k}": ordered[:, :k].sum(dim=1) / num_relevant for k in ks}
    first = ordered.argmax(dim=1).float() + 1.0  # rank of the first relevant candidate
    metrics["mrr"] = 1.0 / first
    depth = min(10, scores.shape[1])
    discounts = _ndcg_discounts(depth, scores.device)
    dcg = (ordered[:, :depth] * discounts).sum(dim=1)
    ideal_hits = torch.arange(depth, device=scores.device)[None, :] < num_relevant[:, None]
    idcg = (ideal_hits.float() * discounts).sum(dim=1)
    metrics["ndcg@10"] = dcg / idcg
    return metrics


def embedding_retrieval_metrics(query_embeds: torch.Tensor, candidate_embeds: torch.Tensor, gold, ks=(1, 5, 10),
                                block_size: int = 1024) -> dict[str, float]:
    """`retrieval_metrics(query_embeds @ candidate_embeds.T, gold, ks)`, computed one block of `block_size` queries
    at a time: memory O(block_size x candidates) plus one number per query and metric, never the whole queries x
    candidates score matrix (100k queries x 1M products would be 400 GB). The same ranks and pessimistic ties as
    `retrieval_metrics`; `gold` as there (a bool relevance matrix is read a block of rows at a time).

    Example:
        >>> import torch
        >>> queries, products = torch.eye(3), torch.eye(3)
        >>> embedding_retrieval_metrics(queries, products, torch.tensor([0, 2, 2]), ks=(1,), block_size=2)["recall@1"]
        0.6666666865348816
    """
    query_embeds, candidate_embeds = torch.as_tensor(query_embeds), torch.as_tensor(candidate_embeds)
    if query_embeds.dim() != 2 or candidate_embeds.dim() != 2 or query_embeds.shape[1] != candidate_embeds.shape[1]:
        raise ValueError(f"Embeddings must be (queries, dim) and (candidates, dim) of one dim, got "
                         f"{tuple(query_embeds.shape)} and {tuple(candidate_embeds.shape)}.")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}.")
    gold = torch.as_tensor(gold)
    if gold.shape[:1] != query_embeds.shape[:1]:
        raise ValueError(f"gold must have one entry per query ({query_embeds.shape[0]}), got {tuple(gold.shape)}.")
    candidates_t = candidate_embeds.float().t()
    blocks = []
    for start in range(0, max(len(query_embeds), 1), block_size):
        scores = _check_scores(query_embeds[start:start + block_size].float() @ candidates_t)
        block = _per_query_metrics(scores, gold[start:start + block_size].to(scores.device), ks)
        blocks.append({name: values.cpu() for name, values in block.items()})
    return _mean_metrics({name: torch.cat([block[name] for block in blocks]) for name in blocks[0]})


def distinct_products(product_ids) -> tuple[list[int], torch.Tensor]:
    """The row of each distinct product (its first row, in order of appearance) and, for every row, the index of its
    product among them: the candidates and gold of "rank every product of the split" evaluations.

    Example:
        >>> distinct_products(["a", "b", "a"])
        ([0, 1], tensor([0, 1, 0]))
    """
    first_row = {}
    for row, product_id in enumerate(product_ids):
        first_row.setdefault(product_id, row)
    position = {product_id: index for index, product_id in enumerate(first_row)}
    return list(first_row.values()), torch.tensor([position[product_id] for product_id in product_ids])


__all__ = ["distinct_products", "embedding_retrieval_metrics", "gold_ranks", "relevant_in_rank_order",
           "retrieval_metrics"]
