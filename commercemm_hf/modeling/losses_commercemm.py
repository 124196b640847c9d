"""CommerceMM's losses and the process exchange they need: InfoNCE with candidates gathered across processes (exact
gradients), in-proportion sampling of ITM hard negatives, and the one process-rank helper.

`CommerceMMForPreTraining` (ITC, the 9 Omni losses, ITM negatives) and `CommerceMMForRetrieval` (fine-tuning InfoNCE)
import them from here, so a loss has one definition whichever head trains it.

This file travels as Hugging Face remote code: torch and single-dot siblings only (it imports none).
"""

import torch
import torch.distributed as dist
from torch.nn import functional as F


def process_rank_and_world() -> tuple[int, int]:
    """`(rank, world_size)` of this process in the initialised `torch.distributed` group, `(0, 1)` without one.

    The package's one rank helper. It reads `torch.distributed` rather than accelerate's `PartialState`: this file
    travels as remote code, where accelerate may not be installed, and the collectives here run in the group
    that `torchrun` / `accelerate launch` / DeepSpeed initialised, which is exactly what `torch.distributed`
    reports (the trainers above the model read the same numbers through `TrainingArguments.process_index`).

    Example:
        >>> process_rank_and_world()  # a single process
        (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate `tensor` (batch first, without gradient) from every process; batches may differ in size. Returns
    the gathered tensor and the offset of this process's rows. A no-op without `torch.distributed`.

    Example:
        >>> rows, offset = gather_rows(torch.ones(3, 2))  # a single process: the rows themselves, offset 0
        >>> tuple(rows.shape), offset
        ((3, 2), 0)
    """
    rank, world_size = process_rank_and_world()
    if world_size == 1:
        return tensor, 0
    tensor = tensor.detach().contiguous()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    padded = F.pad(tensor, [0, 0] * (tensor.dim() - 1) + [0, max(sizes) - tensor.shape[0]])
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([part[:n] for part, n in zip(gathered, sizes)]), sum(sizes[:rank])


def contrastive_loss(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    logit_scale: torch.Tensor,
    query_ids: torch.Tensor | None = None,
    candidate_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE of L2-normalised `queries` (n, d) against `candidates` (m, d) gathered from every process; query i's
    positive is its own row of the local candidates. With ids, other candidates carrying the query's id (the same
    product seen twice in a batch) are not treated as negatives. `n` may be 0 (a process without such queries must
    still take part in the exchange); the loss is then 0.

    Distributed, the gradient is exact: every process's loss depends on every process's candidates. Rather than an
    autograd-aware all_gather, whose collective would run inside backward in an order that depends on each
    process's graph (and deadlocks when the graphs differ, e.g. a process without tagged posts), the gradient with
    respect to all gathered candidates is computed here, summed across processes with one all_reduce in forward
    order, and attached to the local candidates; backward then needs no collective besides DDP's own.

    Example:
        >>> embeds = F.normalize(torch.eye(3), dim=-1)  # every query matches its own candidate only
        >>> bool(contrastive_loss(embeds, embeds, torch.tensor(100.0)) < 1e-3)
        True
    """
    all_candidates, offset = gather_rows(candidates)
    distributed = process_rank_and_world()[1] > 1
    exchange_gradient = distributed and torch.is_grad_enabled() and candidates.requires_grad
    if exchange_gradient:
        # a leaf standing for every process's candidates, in fp32 so that its gradient cannot underflow
        all_candidates = all_candidates.float().requires_grad_(True)
    if queries.shape[0] == 0:
        loss = (queries.sum() + all_candidates.sum()) * 0.0
    else:
        # fp32 logits: under fp16/bf16 autocast the candidates' gradient below is taken on the unscaled loss, where
        # half precision would underflow; the surrogate then carries it into the loss that the grad scaler scales
        logits = queries.float() @ all_candidates.float().t() * logit_scale.float()
        targets = torch.arange(queries.shape[0], device=queries.device) + offset
        if query_ids is not None and candidate_ids is not None:
            all_ids, _ = gather_rows(candidate_ids)
            same_item = query_ids.unsqueeze(1) == all_ids.unsqueeze(0)
            same_item[torch.arange(queries.shape[0], device=queries.device), targets] = False
            logits = logits.masked_fill(same_item, torch.finfo(logits.dtype).min)
        loss = F.cross_entropy(logits, targets)
    if query_ids is not None and candidate_ids is not None and queries.shape[0] == 0 and distributed:
        gather_rows(candidate_ids)  # match the id gather the other processes make
    if not exchange_gradient:
        return loss
    (candidate_grad,) = torch.autograd.grad(loss, all_candidates, retain_graph=True)
    # DDP averages parameter gradients over processes, so each process back-propagates the *sum* over processes
    # of the loss gradients with respect to its own candidates.
    # (contiguous: the gradient of a sum is an expanded, stride-0 view, which a collective must not write into)
    candidate_grad = candidate_grad.contiguous()
    dist.all_reduce(candidate_grad)
    local_grad = candidate_grad[offset: offset + candidates.shape[0]]
    surrogate = (candidates.float() * local_grad.float()).sum()
    return loss + surrogate - surrogate.detach()


def sample_in_proportion(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One column index per row of `weights` (non-negative, each row with a positive sum), drawn in proportion to the
    row's weights, like `torch.multinomial(weights, 1)`.

    The uniforms come from `generator` on the generator's own device, from the shape alone, and then move to the
    weights' device: `torch.multinomial(cuda_weights, generator=cpu_generator)` raises on CUDA, and a CPU generator
    seeded by the training step then draws the same negatives on every device.

    Example:
        >>> sample_in_proportion(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.Generator().manual_seed(0)).tolist()
        [1, 0]
    """
    source = generator.device if generator is not None else weights.device
    uniforms = torch.rand(weights.shape[0], 1, generator=generator, device=source).to(weights.device, non_blocking=True)
    cumulative = weights.float().cumsum(dim=1)
    total = cumulative[:, -1:]
    # strictly below the row's total, so a trailing zero-weight column can never be drawn
    targets = torch.minimum(uniforms * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cumulative, targets, right=True).squeeze(1)


def source_to_product_loss(queries, products, rows, product_index, scale):
    """InfoNCE from the sources at batch `rows` to every product in the batch (all processes); `product_index`
    tells copies of one product apart from negatives.

    Example:
        >>> products = F.normalize(torch.eye(3), dim=-1)
        >>> scale = torch.tensor(100.0)
        >>> bool(source_to_product_loss(products[[2]], products, torch.tensor([2]), torch.arange(3), scale) < 1e-3)
        True
    """
    # A source at batch row r retrieves product r; gather the positives first so that `contrastive_loss`'s
    # "own row" convention holds, and append the remaining products as extra negatives.
    positives = products[rows]
    others = torch.ones(products.shape[0], dtype=torch.bool, device=products.device)
    others[rows] = False
    candidates = torch.cat([positives, products[others]])
    candidate_ids = torch.cat([product_index[rows], product_index[others]])
    return contrastive_loss(queries, candidates, scale, product_index[rows], candidate_ids)


__all__ = ["contrastive_loss", "gather_rows", "process_rank_and_world", "sample_in_proportion",
           "source_to_product_loss"]
