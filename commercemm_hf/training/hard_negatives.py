"""Hard-negative batches for retrieval fine-tuning (`--hard_negatives`).

`CommerceMMForRetrieval` learns from in-batch negatives: every other product of the batch. Drawn at random from a
small catalog, those are mostly easy (a mug against a lamp); the loss then stops teaching long before the model tells
similar products apart. Here each batch is built from products that are close in the starting model's embedding
space, so every negative is a hard one, the way sentence-transformers' `mine_hard_negatives` or clustered batches
do it for text.

* The products are embedded once, before training, by the model the run starts from (the pretrained towers: that
  is where "close" means something; a tower from scratch gives near-random clusters). The order therefore does not
  depend on the weights being trained, so a resumed run draws exactly the batches an uninterrupted one draws.
* Each epoch the clusters are drawn again with a seed of (seed, epoch): a random product opens a cluster and takes
  its nearest products not yet taken, until the cluster holds a batch; the clusters are then shuffled.
* Cost: one embedding pass over the distinct training products, and (products / batch) similarity passes per epoch,
  i.e. O(products^2 / batch) dot products: seconds for tens of thousands of products; for catalogs of millions,
  mine with a vector index instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch


logger = logging.getLogger(__name__)


def cluster_products(embeddings: torch.Tensor, cluster_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Clusters of `cluster_size` product indices (the last one may be smaller): a random product not yet taken
    opens each cluster and takes its nearest untaken products by cosine similarity (`embeddings` L2-normalised).

    Example:
        >>> import torch
        >>> points = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]]))
        >>> clusters = cluster_products(points, 2, torch.Generator().manual_seed(0))
        >>> sorted(sorted(cluster.tolist()) for cluster in clusters)
        [[0, 2], [1, 3]]
    """
    count = embeddings.shape[0]
    untaken = torch.ones(count, dtype=torch.bool)
    clusters = []
    for opener in torch.randperm(count, generator=generator).tolist():
        if not untaken[opener]:
            continue
        similarity = embeddings @ embeddings[opener]
        similarity[~untaken] = -float("inf")
        similarity[opener] = float("inf")  # the opener belongs to its own cluster, even among duplicates
        members = similarity.topk(min(cluster_size, int(untaken.sum()))).indices
        untaken[members] = False
        clusters.append(members)
    return clusters


class HardNegativeSampler(torch.utils.data.Sampler):
    """Training rows in batches of similar products: `Trainer` takes it as the train sampler (see
    `CommerceMMRetrievalTrainer`). `row_products[i]` is the index (into `embeddings`) of row i's product; the rows
    of one product stay together (they are not each other's negatives anyway: `target_index`).

    Example:
        >>> import torch
        >>> embeddings = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)))
        >>> sampler = HardNegativeSampler(embeddings, row_products=[0, 1, 2, 3, 4, 5, 5], batch_size=2, seed=0)
        >>> sorted(sampler) == list(range(7)), len(sampler)
        (True, 7)
    """

    def __init__(self, embeddings: torch.Tensor, row_products: Sequence[int], batch_size: int, seed: int = 0):
        self.embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1)
        self.row_products = list(row_products)
        self.rows_of = [[] for _ in range(self.embeddings.shape[0])]
        for row, product in enumerate(self.row_products):
            self.rows_of[product].append(row)
        # several rows per product (queries of one product): fewer products per cluster, one batch of rows each
        rows_per_product = len(self.row_products) / max(1, sum(1 for rows in self.rows_of if rows))
        self.cluster_size = max(1, round(batch_size / rows_per_product))
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.row_products)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        clusters = cluster_products(self.embeddings, self.cluster_size, generator)
        for index in torch.randperm(len(clusters), generator=generator).tolist():
            for product in clusters[index].tolist():
                yield from self.rows_of[product]


@torch.no_grad()
def hard_negative_sampler(model, collator, rows, batch_size: int, seed: int = 0,
                          embedding_batch_size: int = 64) -> HardNegativeSampler:
    """Embed the distinct products of the training `rows` (a `datasets.Dataset` with `product_id`) with `model`
    (`CommerceMMForRetrieval`, as the run starts) through the retrieval collator's target side, and return the
    `HardNegativeSampler` over `rows`."""
    from ..evaluation.retrieval import distinct_products

    product_rows, row_products = distinct_products(rows["product_id"])
    encode = collator.for_evaluation().only("target")
    was_training = model.training
    model.eval()
    try:
        embeddings = []
        for start in range(0, len(product_rows), embedding_batch_size):
            batch = encode([rows[index] for index in product_rows[start:start + embedding_batch_size]])
            batch = {key: value.to(model.device) if torch.is_tensor(value) else value for key, value in batch.items()}
            embeddings.append(model(**batch).target_embeds.float().cpu())  # the target side only: no loss
    finally:
        model.train(was_training)
    logger.info(f"Hard negatives: {len(product_rows)} training products embedded; batches of similar products.")
    return HardNegativeSampler(torch.cat(embeddings), row_products.tolist(), batch_size, seed)


__all__ = ["HardNegativeSampler", "cluster_products", "hard_negative_sampler"]
