"""Run under `torchrun --nproc_per_node=2`: two-pass pretraining with gloo, cross-process contrastive gathering,
and identical modality-randomization depths on every process. Writes results_<rank>.json into argv[1]."""

import json
import os
import sys

import torch
import torch.distributed as dist
from transformers import TrainingArguments


sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from helpers import CORPUS, tiny_config, tiny_datasets  # noqa: E402

from commercemm_hf import (  # noqa: E402
    CommerceMMForPreTraining,
    CommerceMMProcessor,
    train_commercemm_tokenizer,
)
from commercemm_hf.modeling.modeling_commercemm_pretraining import contrastive_loss  # noqa: E402
from commercemm_hf.training import CommerceMMPretrainingTrainer  # noqa: E402
from commercemm_hf.training import trainer as trainer_module  # noqa: E402


output_dir = sys.argv[1]
tokenizer = train_commercemm_tokenizer(CORPUS, vocab_size=300, model_max_length=40)
processor = CommerceMMProcessor.from_model_config(tiny_config(vocab_size=len(tokenizer)), tokenizer)
image_text, omni = tiny_datasets(16)
torch.manual_seed(0)
model = CommerceMMForPreTraining(tiny_config(vocab_size=len(tokenizer), full_depth_probability=0.3))
args = TrainingArguments(
    output_dir, max_steps=4, per_device_train_batch_size=4, logging_steps=1, save_steps=2, report_to=[], seed=0,
    use_cpu=True, ddp_backend="gloo", disable_tqdm=True, dataloader_num_workers=0,
)
depths_seen = []
original_sample = trainer_module.sample_depths


def recording_sample(*a, **k):
    depths = original_sample(*a, **k)
    depths_seen.append(depths)
    return depths


trainer_module.sample_depths = recording_sample
trainer = CommerceMMPretrainingTrainer(model=model, args=args, train_dataset=image_text, omni_dataset=omni,
                                       processor=processor)
trainer.train()

# contrastive negatives gathered across processes with exact gradients: the mean of the per-process losses equals the
# single-process loss over the whole batch
rank, world = dist.get_rank(), dist.get_world_size()
generator = torch.Generator().manual_seed(123)
queries = torch.nn.functional.normalize(torch.randn(8, 16, generator=generator), dim=-1)
candidates = torch.nn.functional.normalize(torch.randn(8, 16, generator=generator), dim=-1).requires_grad_(True)
local = slice(rank * 4, rank * 4 + 4)
local_candidates = candidates[local].detach().clone().requires_grad_(True)
loss = contrastive_loss(queries[local], local_candidates, torch.tensor(10.0))
loss.backward()
gathered_loss = loss.detach().clone()
dist.all_reduce(gathered_loss)
# the single-process loss over the whole batch, written out (contrastive_loss would gather again here)
reference = torch.nn.functional.cross_entropy(queries @ candidates.t() * 10.0, torch.arange(8))
reference.backward()

# a process without queries of a kind (rank 1 here) still takes part, and its candidates get rank 0's gradient
own_candidates = candidates[local].detach().clone().requires_grad_(True)
own_queries = queries[:4] if rank == 0 else queries[:0]
contrastive_loss(own_queries, own_candidates, torch.tensor(10.0)).backward()
full_candidates = candidates.detach().clone().requires_grad_(True)
torch.nn.functional.cross_entropy(queries[:4] @ full_candidates.t() * 10.0, torch.arange(4)).backward()

# DDP kept the replicas identical
parameters = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
replicas = [torch.zeros_like(parameters) for _ in range(world)]
dist.all_gather(replicas, parameters)

with open(os.path.join(output_dir, f"results_{rank}.json"), "w") as handle:
    json.dump({
        "world_size": world,
        "global_step": trainer.state.global_step,
        "logged": [row for row in trainer.state.log_history if "loss" in row],
        "depths": depths_seen,
        "gathered_loss": float(gathered_loss / world),
        "reference_loss": float(reference),
        # DDP averages gradients over processes, so each process holds the sum over processes of the loss gradients
        # with respect to its own candidates: world x the full-batch (mean) loss's gradient
        "grad_matches": bool(torch.allclose(local_candidates.grad, candidates.grad[local] * world, atol=1e-6)),
        "grad_without_queries_matches": bool(
            torch.allclose(own_candidates.grad, full_candidates.grad[local], atol=1e-6)),
        "replicas_equal": all(bool(torch.equal(replica, replicas[0])) for replica in replicas),
    }, handle)

# leave the process group before exiting: a process that exits with gloo threads still running can abort
# ("terminate called without an active exception"), which made this test flaky on a loaded machine
dist.barrier()
dist.destroy_process_group()
