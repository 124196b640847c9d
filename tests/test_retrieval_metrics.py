"""Retrieval metrics: pessimistic ties, agreement with a slow per-query reference, multi-relevant variant."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from commercemm_hf.evaluation import gold_ranks, relevant_in_rank_order, retrieval_metrics


def reference_metrics(scores: list[list[float]], relevant: list[set[int]], ks) -> dict[str, float]:
    """Per query: sort candidates by (-score, relevant last), then read the metrics off the ranking."""
    totals = {**{f"recall@{k}": 0.0 for k in ks}, "mrr": 0.0, "ndcg@10": 0.0}
    for row, gold in zip(scores, relevant):
        order = sorted(range(len(row)), key=lambda c: (-row[c], c in gold))
        hits = [c in gold for c in order]
        for k in ks:
            totals[f"recall@{k}"] += sum(hits[:k]) / len(gold)
        totals["mrr"] += 1.0 / (hits.index(True) + 1)
        dcg = sum(1.0 / math.log2(rank + 2) for rank, hit in enumerate(hits[:10]) if hit)
        idcg = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(gold), 10)))
        totals["ndcg@10"] += dcg / idcg
    return {name: value / len(scores) for name, value in totals.items()}


def test_all_equal_scores_never_look_perfect():
    for num_candidates in (2, 5, 50):
        metrics = retrieval_metrics(torch.zeros(num_candidates, num_candidates), torch.arange(num_candidates))
        assert metrics["recall@1"] == 0.0
        assert metrics["mrr"] == pytest.approx(1.0 / num_candidates)
        assert gold_ranks(torch.ones(3, num_candidates), torch.tensor([0, 1, num_candidates - 1])).tolist() == \
            [num_candidates] * 3
    # the same with a relevance matrix: relevant items go after every tied irrelevant one
    relevance = torch.zeros(4, 6, dtype=torch.bool)
    relevance[:, :2] = True
    metrics = retrieval_metrics(torch.full((4, 6), 0.5), relevance, ks=(1, 4, 5))
    assert metrics["recall@1"] == 0.0 and metrics["recall@4"] == 0.0 and metrics["recall@5"] == 0.5
    assert metrics["mrr"] == pytest.approx(1 / 5)


def test_perfect_and_partial_rankings():
    scores = torch.eye(4) + 0.01 * torch.arange(4.0)
    assert retrieval_metrics(scores, torch.arange(4)) == {"recall@1": 1.0, "recall@5": 1.0, "recall@10": 1.0,
                                                           "mrr": 1.0, "ndcg@10": 1.0}
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.3, 0.9]])
    assert gold_ranks(scores, torch.tensor([0, 1])).tolist() == [3, 3]
    metrics = retrieval_metrics(scores, torch.tensor([2, 0]), ks=(1, 2))
    assert metrics["recall@1"] == 0.0 and metrics["recall@2"] == 0.5  # ranks 2 and 3 (the tie counts against gold)
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_tie_with_gold_counts_against_it():
    scores = torch.tensor([[0.7, 0.7, 0.1]])
    assert retrieval_metrics(scores, torch.tensor([0]), ks=(1, 2))["recall@1"] == 0.0
    assert retrieval_metrics(scores, torch.tensor([1]), ks=(1, 2))["recall@2"] == 1.0
    ordered = relevant_in_rank_order(scores, torch.tensor([[True, False, False]]))
    assert ordered.tolist() == [[False, True, False]]


@pytest.mark.parametrize("bad", [
    (torch.zeros(3), torch.tensor([0])),  # not 2-D
    (torch.zeros(2, 3), torch.tensor([0])),  # wrong gold length
    (torch.zeros(2, 3), torch.tensor([0, 3])),  # out of range
    (torch.tensor([[float("nan"), 0.0]]), torch.tensor([0])),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)),
    (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool)),  # a query with no relevant candidate
    (torch.zeros(2, 3), torch.tensor([0.0, 1.0])),  # float gold
])
def test_invalid_inputs_raise(bad):
    with pytest.raises(ValueError):
        retrieval_metrics(*bad)


scores_and_gold = st.integers(1, 6).flatmap(lambda q: st.integers(1, 14).flatmap(lambda c: st.tuples(
    # few distinct values so that ties are common
    st.lists(st.lists(st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0]), min_size=c, max_size=c), min_size=q, max_size=q),
    st.lists(st.integers(0, c - 1), min_size=q, max_size=q),
)))


@settings(max_examples=150, deadline=None)
@given(scores_and_gold)
def test_single_gold_matches_reference(data):
    scores, gold = data
    ks = (1, 2, 5, 10)
    got = retrieval_metrics(torch.tensor(scores), torch.tensor(gold), ks=ks)
    expected = reference_metrics(scores, [{g} for g in gold], ks)
    assert got == pytest.approx(expected, abs=1e-5)


relevance_cases = st.integers(1, 5).flatmap(lambda q: st.integers(1, 14).flatmap(lambda c: st.tuples(
    st.lists(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=c, max_size=c), min_size=q, max_size=q),
    st.lists(st.sets(st.integers(0, c - 1), min_size=1), min_size=q, max_size=q),
)))


@settings(max_examples=150, deadline=None)
@given(relevance_cases)
def test_relevance_matrix_matches_reference(data):
    scores, relevant = data
    relevance = torch.zeros(len(scores), len(scores[0]), dtype=torch.bool)
    for row, items in enumerate(relevant):
        relevance[row, list(items)] = True
    ks = (1, 3, 10)
    got = retrieval_metrics(torch.tensor(scores), relevance, ks=ks)
    assert got == pytest.approx(reference_metrics(scores, relevant, ks), abs=1e-5)


def test_relevance_matrix_agrees_with_single_gold():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (30, 20), generator=generator).float()
    gold = torch.randint(0, 20, (30,), generator=generator)
    relevance = torch.nn.functional.one_hot(gold, 20).bool()
    assert retrieval_metrics(scores, relevance) == pytest.approx(retrieval_metrics(scores, gold))


def test_large_input_is_vectorised_and_fast():
    import time

    scores = torch.randn(2000, 2000)
    start = time.perf_counter()
    metrics = retrieval_metrics(scores, torch.arange(2000))
    assert time.perf_counter() - start < 2.0
    assert 0.0 <= metrics["recall@1"] <= 0.01


@pytest.mark.parametrize("block_size", [1, 3, 7, 1024])
def test_blocks_of_queries_give_the_numbers_of_the_whole_score_matrix(block_size, monkeypatch):
    from commercemm_hf.evaluation import embedding_retrieval_metrics
    from commercemm_hf.evaluation import retrieval as retrieval_module

    generator = torch.Generator().manual_seed(0)
    # few distinct values: many tied scores, so the pessimistic tie-breaking is exercised block by block
    queries = torch.randint(-1, 2, (23, 4), generator=generator).float()
    products = torch.randint(-1, 2, (11, 4), generator=generator).float()
    gold = torch.randint(0, 11, (23,), generator=generator)
    relevance = torch.rand(23, 11, generator=generator) < 0.3
    relevance[torch.arange(23), gold] = True
    expected = [retrieval_metrics(queries @ products.t(), target, ks=(1, 2, 5)) for target in (gold, relevance)]
    shapes = []
    original = retrieval_module._check_scores
    monkeypatch.setattr(retrieval_module, "_check_scores", lambda scores: shapes.append(tuple(scores.shape))
                        or original(scores))
    got = [embedding_retrieval_metrics(queries, products, target, ks=(1, 2, 5), block_size=block_size)
           for target in (gold, relevance)]
    assert got == expected
    assert max(rows for rows, _ in shapes) == min(block_size, 23)  # never more than a block of score rows
    with pytest.raises(ValueError, match="one entry per query"):
        embedding_retrieval_metrics(queries, products, gold[:5])
