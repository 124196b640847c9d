"""Run under `torchrun --nproc_per_node=2 engine_pretraining.py OUTPUT_DIR ENGINE`: three steps of two-pass
pretraining with gradient accumulation 2 under ENGINE (ddp, fsdp or deepspeed), on CPU with gloo, then an
evaluation. Rank 0 writes OUTPUT_DIR/results.json (per-step logged losses, optimizer and scheduler step counts,
DDP bucket synchronisations per step, evaluation metrics) and OUTPUT_DIR/weights.safetensors (the full weights)."""

import json
import os
import sys
from collections import Counter

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from transformers import TrainerCallback, TrainingArguments


sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from helpers import CORPUS, tiny_config, tiny_datasets  # noqa: E402

from commercemm_hf import (  # noqa: E402
    CommerceMMForPreTraining,
    CommerceMMProcessor,
    train_commercemm_tokenizer,
)
from commercemm_hf.training import CommerceMMPretrainingTrainer  # noqa: E402


output_dir, engine = sys.argv[1], sys.argv[2]
tokenizer = train_commercemm_tokenizer(CORPUS, vocab_size=300, model_max_length=40)
processor = CommerceMMProcessor.from_model_config(tiny_config(vocab_size=len(tokenizer)), tokenizer)
image_text, omni = tiny_datasets(24)
torch.manual_seed(0)
model = CommerceMMForPreTraining(tiny_config(vocab_size=len(tokenizer)))
if engine == "fsdp":
    # FSDP2 through transformers: sharded at load time by `from_pretrained(distributed_config=...)`, which Trainer
    # then trains as it is (accelerate's own FSDP is for GPU-like devices only; on CPU it silently falls back to DDP)
    from transformers.distributed import DistributedConfig

    initial = os.path.join(output_dir, "initial")
    if int(os.environ["RANK"]) == 0:
        model.save_pretrained(initial)
    torch.distributed.init_process_group("gloo")
    dist.barrier()
    model = CommerceMMForPreTraining.from_pretrained(initial, distributed_config=DistributedConfig(fsdp_size=2))
engine_arguments = {
    "ddp": {},
    "fsdp": {},
    "deepspeed": {"deepspeed": {
        "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "zero_optimization": {"stage": 2}, "zero_allow_untested_optimizer": True,
    }},
}[engine]
args = TrainingArguments(
    output_dir, max_steps=3, per_device_train_batch_size=4, gradient_accumulation_steps=2, logging_steps=1,
    save_strategy="no", report_to=[], seed=0, learning_rate=1e-3, use_cpu=True, ddp_backend="gloo",
    disable_tqdm=True, dataloader_num_workers=0, **engine_arguments,
)
trainer = CommerceMMPretrainingTrainer(model=model, args=args, train_dataset=image_text, omni_dataset=omni,
                                       processor=processor, eval_dataset=image_text, eval_omni_dataset=omni)
torch_optimizer_steps, bucket_syncs = [], Counter()


class Instrument(TrainerCallback):
    """Counts the real optimizer's steps, and (DDP) every bucket all-reduce per training step."""

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        inner = optimizer
        while hasattr(inner, "optimizer"):  # accelerate's, DeepSpeed's wrappers, down to the torch optimizer
            inner = inner.optimizer
        inner.register_step_post_hook(lambda *unused: torch_optimizer_steps.append(state.global_step))
        wrapped = trainer.model_wrapped
        if isinstance(wrapped, torch.nn.parallel.DistributedDataParallel):
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

            def counting_allreduce(process_group, bucket):
                bucket_syncs[(state.global_step, bucket.index())] += 1
                return allreduce_hook(process_group, bucket)

            wrapped.register_comm_hook(None, counting_allreduce)


trainer.add_callback(Instrument())
trainer.train()
# FSDP2 reshards the root after backward: the embedding methods that evaluation calls directly need it gathered
from torch.distributed.tensor import DTensor  # noqa: E402


projection = trainer.model.commercemm.text_projection
sharded_after_training = isinstance(projection.weight, DTensor)
with trainer._gathered_parameters():
    whole_inside = not isinstance(projection.weight, DTensor)
metrics = trainer.evaluate()
if engine == "fsdp":  # the full weights from FSDP2's shards
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    weights = get_model_state_dict(trainer.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
else:
    weights = trainer.accelerator.get_state_dict(trainer.model_wrapped)
scheduler = trainer.lr_scheduler
if dist.get_rank() == 0:
    save_file({name: tensor.detach().float().cpu().clone() for name, tensor in weights.items()},  # tied: copies
              os.path.join(output_dir, "weights.safetensors"))
    with open(os.path.join(output_dir, "results.json"), "w") as handle:
        json.dump({
            "engine": engine,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "world_size": dist.get_world_size(),
            "global_step": trainer.state.global_step,
            # ZeRO steps the torch optimizer once per parameter group; the engine counts its own steps
            "torch_optimizer_steps": len(torch_optimizer_steps),
            "deepspeed_engine_steps": getattr(trainer.model_wrapped, "global_steps", None),
            "parameter_groups": len(trainer.optimizer.param_groups),
            "scheduler_steps": getattr(scheduler, "last_epoch", None),
            "logged": [row for row in trainer.state.log_history if "loss" in row and "step" in row],
            "eval": metrics,
            "max_bucket_syncs_per_step": max(bucket_syncs.values()) if bucket_syncs else None,
            "sharded_after_training": sharded_after_training, "whole_inside_gathered": whole_inside,
            "fsdp_units": sum(type(m).__name__.startswith("FSDP") for m in trainer.model.modules()),
            "bucket_syncs": len(bucket_syncs),
        }, handle)
dist.barrier()
dist.destroy_process_group()
