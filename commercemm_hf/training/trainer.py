"""`CommerceMMPretrainingTrainer`: the 14 CommerceMM tasks as two forward/backward passes per step.

Each micro-step runs the image-text pass (MLM, MIM-kl, MIM-fr, ITC, ITM) on a batch of the main stream and calls
backward, then the Omni pass (the 9 Omni-Retrieval losses) on a batch of the second stream and calls backward; the
Trainer then takes one optimizer step. Everything else is transformers' `Trainer`: gradient accumulation, logging,
evaluation, `torchrun` / `accelerate launch`, checkpoints and resume.

What `Trainer` does not do by itself, and this class adds:
* the second data stream, whose position (epoch, batches consumed) is saved with every checkpoint and restored;
* randomness tied to the step: the MLM/MIM masks and ITM negatives of micro-step *m* of step *s* on process *r*,
  and the active depths of step *s* (the same on every process) come from generators seeded with
  `(seed, s, m, r)` / `(seed, s)`, so a resumed run draws exactly what the uninterrupted run drew;
* atomic checkpoints: written into `output_dir/.staging/checkpoint-N`, renamed to `output_dir/checkpoint-N` when
  complete, so a kill mid-save never leaves a half-written checkpoint for resume to pick up;
* every loss logged under its own name (`mlm_loss`, ..., `omni_multimodal_to_multimodal_loss`).
"""

import contextlib
import functools
import inspect
import json
import logging
import math
import os
import shutil
from collections import defaultdict

import torch
from accelerate.data_loader import skip_first_batches
from accelerate.utils import DistributedType
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader, DistributedSampler
from transformers import Trainer
from transformers.distributed.fsdp import is_fsdp_managed_module
from transformers.trainer_utils import get_last_checkpoint

from ..modeling.configuration_commercemm import IMAGE_TEXT_TASKS, OMNI_TASKS, PRETRAINING_TASKS
from .collators import CommerceMMOmniCollator, CommerceMMPretrainingCollator
from .disk_space import disk_full_named


logger = logging.getLogger(__name__)

STATE_FILE = "commercemm_pretraining_state.json"
STAGING_DIR = ".staging"


def _seed(*parts: int) -> int:
    value = 0
    for part in parts:
        value = (value * 1_000_003 + int(part)) % (2**63 - 1)
    return value


def sample_depths(config, seed: int, step: int, enabled: bool = True) -> dict[str, int | None]:
    """Active depths for `step` (modality randomization): full depth with probability
    `config.full_depth_probability`, else one of each stack's `*_depth_choices`. Depends only on (seed, step), so
    every process of a distributed run draws the same depths."""
    full = {"text_depth": None, "image_depth": None, "multimodal_depth": None}
    if not enabled:
        return full
    generator = torch.Generator().manual_seed(_seed(seed, step, 7))
    if float(torch.rand(1, generator=generator)) < config.full_depth_probability:
        return full
    depths = {}
    for stack in ("text", "image", "multimodal"):
        choices = getattr(config, f"{stack}_depth_choices")
        depths[f"{stack}_depth"] = choices[int(torch.randint(len(choices), (1,), generator=generator))]
    return depths


class CommerceMMPretrainingTrainer(Trainer):
    """A `transformers.Trainer` for `CommerceMMForPreTraining` over two data streams.

    Args:
        model: a `CommerceMMForPreTraining`.
        args: `TrainingArguments` (`remove_unused_columns` is turned off: the collators read the raw columns).
        train_dataset: image-text rows (`image`, `text`, optional `product_id`).
        omni_dataset: Omni rows (`source_type`, `source_text`, `source_image`, `product_id`, `image`, `text`).
        processor: the `CommerceMMProcessor`.
        eval_dataset / eval_omni_dataset: rows of the same kinds for `evaluate()` (pretraining losses, and zero-shot
            retrieval recall on the Omni rows).
        omni_batch_size: Omni rows per device per micro-step (default: `per_device_train_batch_size`).
        modality_randomization: sample active depths per step (default: `model.config.modality_randomization`).
        augment: an `ImageAugmentation` (commercemm_hf/training/augmentation.py, `--augment`) applied to the
            training images of both streams (products and sources); evaluation sees them as they are.
        shuffle_buffer_size: rows in the shuffle buffer of each stream given as a `datasets.IterableDataset`
            (e.g. `load_image_text_dataset(..., streaming=True)`); 0 keeps the stream's order. An IterableDataset
            needs `max_steps`. A `Dataset` is shuffled whole, as before.
        shuffle_input_shards: how many shards of a stream feed its shuffle buffer at a time (`datasets`'
            `max_buffer_input_shards`, 10 by default there: each shard read holds its record batches in flight;
            measured on Parquet shards of embedded JPEGs, 10 shards at a time peaked at 1.8 GB, 2 at 0.67 GB).

    Example:
        >>> import tempfile
        >>> from transformers import TrainingArguments
        >>> from commercemm_hf import CommerceMMForPreTraining, CommerceMMProcessor
        >>> from commercemm_hf.training import CommerceMMPretrainingTrainer
        >>> from commercemm_hf.training.recipes import prepare_demo
        >>> demo = prepare_demo(num_products=12, vocab_size=300, vision_config={"image_size": 32})
        >>> model = CommerceMMForPreTraining(demo.config)
        >>> args = TrainingArguments(tempfile.mkdtemp(), max_steps=2, per_device_train_batch_size=4, report_to=[],
        ...                          disable_tqdm=True, save_strategy="no", use_cpu=True)
        >>> trainer = CommerceMMPretrainingTrainer(model=model, args=args, train_dataset=demo.train_rows,
        ...                                        omni_dataset=demo.train_omni, processor=demo.processor)
        >>> result = trainer.train()  # or trainer.train(resume_from_checkpoint=True)  # doctest: +ELLIPSIS
        {'train_runtime': ...}
        >>> result.global_step, sorted(trainer.state.log_history[-1])[:3]
        (2, ['epoch', 'step', 'total_flos'])
    """

    def __init__(self, model=None, args=None, train_dataset=None, omni_dataset=None, processor=None,
                 eval_dataset=None, eval_omni_dataset=None, omni_batch_size: int | None = None,
                 modality_randomization: bool | None = None, shuffle_buffer_size: int = 10_000, augment=None,
                 shuffle_input_shards: int = 2, **kwargs):
        if omni_dataset is None:
            raise ValueError("CommerceMMPretrainingTrainer needs omni_dataset (the second data stream).")
        if processor is None:
            raise ValueError("CommerceMMPretrainingTrainer needs the CommerceMMProcessor (processor=...).")
        if args is not None:
            # the collators read the raw `image`/`text`/... columns, which Trainer would otherwise drop
            args.remove_unused_columns = False
            if args.ddp_find_unused_parameters is None:
                # layers above the sampled depths, and the heads of the other pass, get no gradient
                args.ddp_find_unused_parameters = True
        collator = CommerceMMPretrainingCollator(processor, model.config, masking=False, augment=augment)
        # evaluation sees the images as they are
        self.eval_collators = (CommerceMMPretrainingCollator(processor, model.config, masking=False),
                               CommerceMMOmniCollator(processor, model.config))
        self.shuffle_buffer_size, self.shuffle_input_shards = shuffle_buffer_size, shuffle_input_shards
        if isinstance(train_dataset, IterableDataset) and shuffle_buffer_size:
            # Trainer streams an IterableDataset as it is (split between processes by accelerate, `set_epoch`
            # each epoch, the first batches read and dropped on resume); the buffer shuffles it
            train_dataset = self._shuffled(train_dataset, args.seed if args is not None else 42)
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         data_collator=collator, processing_class=processor, **kwargs)
        self.omni_dataset = omni_dataset
        self.eval_omni_dataset = eval_omni_dataset
        self.omni_collator = CommerceMMOmniCollator(processor, model.config, augment=augment)
        self.omni_batch_size = omni_batch_size or self.args.per_device_train_batch_size
        self.modality_randomization = (
            model.config.modality_randomization if modality_randomization is None else modality_randomization
        )
        self.omni_position = {"epoch": 0, "batches": 0}
        self._omni_iterator = None
        self._micro_step = 0
        self._micro_step_of = -1
        # per-task sums and counts of micro-steps since the last log (a task is absent from a batch that lacks
        # its inputs, e.g. omni_multimodal_* without tagged posts)
        self._task_loss_sums = defaultdict(float)
        self._task_loss_counts = defaultdict(int)

    # ------------------------------------------------------------------------------------------ the Omni stream

    def _omni_stream_loader(self, epoch: int, skip_batches: int) -> DataLoader:
        """The Omni rows of a `datasets.IterableDataset`: this process's share (`split_dataset_by_node`), shuffled
        with a buffer of `shuffle_buffer_size` rows (reseeded each epoch by `set_epoch`), the first `skip_batches`
        batches of the epoch left out. The order depends only on (seed, epoch, world size, workers), so the
        position (epoch, batches) restores it exactly: with `dataloader_num_workers=0` by skipping rows before they
        are decoded, with workers by reading and dropping the batches (the workers' round-robin order)."""
        rows = self.omni_dataset
        if self.args.world_size > 1:
            rows = split_dataset_by_node(rows, rank=self.args.process_index, world_size=self.args.world_size)
        if self.shuffle_buffer_size:
            rows = self._shuffled(rows, self.args.seed)
        workers = self.args.dataloader_num_workers
        if skip_batches and not workers:
            rows = rows.skip(skip_batches * self.omni_batch_size)
        rows.set_epoch(epoch)
        loader = DataLoader(rows, batch_size=self.omni_batch_size, collate_fn=self.omni_collator,
                            num_workers=workers)
        return skip_first_batches(loader, skip_batches) if skip_batches and workers else loader

    def _shuffled(self, rows: IterableDataset, seed: int) -> IterableDataset:
        options = {"seed": seed, "buffer_size": self.shuffle_buffer_size}
        if "max_buffer_input_shards" in inspect.signature(rows.shuffle).parameters:  # datasets >= 5
            options["max_buffer_input_shards"] = self.shuffle_input_shards
        return rows.shuffle(**options)

    def _omni_loader(self, epoch: int, skip_batches: int) -> DataLoader:
        if isinstance(self.omni_dataset, IterableDataset):
            return self._omni_stream_loader(epoch, skip_batches)
        sampler = DistributedSampler(self.omni_dataset, num_replicas=self.args.world_size, rank=self.args.process_index,
                                     shuffle=True,
                                     seed=self.args.seed)
        sampler.set_epoch(epoch)
        indices = list(sampler)[skip_batches * self.omni_batch_size:]
        return DataLoader(self.omni_dataset, batch_size=self.omni_batch_size, sampler=indices,
                          collate_fn=self.omni_collator, num_workers=self.args.dataloader_num_workers)

    def next_omni_batch(self) -> dict:
        """The next Omni batch; the stream starts a new (reshuffled) epoch when it runs out."""
        for _ in range(2):
            if self._omni_iterator is None:
                self._omni_iterator = iter(self._omni_loader(**{
                    "epoch": self.omni_position["epoch"], "skip_batches": self.omni_position["batches"]}))
            try:
                batch = next(self._omni_iterator)
                self.omni_position["batches"] += 1
                return batch
            except StopIteration:
                self.omni_position = {"epoch": self.omni_position["epoch"] + 1, "batches": 0}
                self._omni_iterator = None
        raise ValueError("The Omni dataset yields no batch: is it empty?")

    # ------------------------------------------------------------------------------------------ the two passes

    def _step_generator(self) -> torch.Generator:
        """A CPU generator seeded by (seed, step, micro-step, rank). Every draw from it is made from shapes alone and
        moved to the batch's device (`shape_draws`), so it serves a batch on any device and a resumed run draws what
        the uninterrupted run drew."""
        if self._micro_step_of != self.state.global_step:
            self._micro_step_of, self._micro_step = self.state.global_step, 0
        generator = torch.Generator().manual_seed(
            _seed(self.args.seed, self.state.global_step, self._micro_step, self.args.process_index))
        self._micro_step += 1
        return generator

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Two forward/backward passes: the image-text batch (`inputs`, masked here on its own device) and the next
        Omni batch. Each pass is `Trainer.training_step` itself (gradient-accumulation scaling, DeepSpeed, the
        multi-GPU mean, schedule-free optimizers, cache emptying, ...); gradients are synchronised, and DeepSpeed's
        engine steps, on the last pass of the step only."""
        generator = self._step_generator()
        depths = sample_depths(self.model.config, self.args.seed, self.state.global_step, self.modality_randomization)
        active = self.model.active_tasks()
        passes = []
        if active & set(IMAGE_TEXT_TASKS):
            passes.append({**self.data_collator.mask(inputs, generator), "generator": generator, **depths})
        if active & set(OMNI_TASKS):
            passes.append({**self.next_omni_batch(), **depths})
        total = None
        for index, batch in enumerate(passes):
            with self._gradient_sync(model, last_pass=index == len(passes) - 1):
                loss = super().training_step(model, batch, num_items_in_batch)
            total = loss if total is None else total + loss
        return total

    @contextlib.contextmanager
    def _gradient_sync(self, model, last_pass: bool):
        """Hold back gradient synchronisation during every pass but the last of a synchronising micro-step.

        `Trainer` decides per micro-step whether gradients are synchronised (`accelerator.sync_gradients`, DDP /
        FSDP `no_sync` around non-final micro-steps). Within a synchronising micro-step, the first pass must not
        synchronise either: DDP would all-reduce twice, and DeepSpeed's engine, which steps at every backward made
        with `sync_gradients=True`, would take two optimizer and scheduler steps. The choice of context follows
        `Trainer._inner_training_loop`.
        """
        syncing = self.accelerator.sync_gradients
        if last_pass or not syncing:
            yield
            return
        self.accelerator.gradient_state._set_sync_gradients(False)
        try:
            if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
                context = contextlib.nullcontext  # the engine reads sync_gradients (its accumulation boundary)
            elif self.is_distributed_loading_by_transformers and is_fsdp_managed_module(self.model):
                context = self._defer_fsdp_gradient_reduction
            else:
                context = functools.partial(self.accelerator.no_sync, model=model)
            with context():
                yield
        finally:
            self.accelerator.gradient_state._set_sync_gradients(syncing)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, return_dict=True)  # read by name below, whatever config.return_dict says
        if model.training:
            logged = {f"{task}_loss": value for task, value in outputs.losses.items()}
            for name in ("mim_kl_target_entropy", "mim_kl_target_usage_entropy", "itm_accuracy"):
                if outputs.get(name) is not None:
                    logged[name] = outputs[name]
            # summed on the device (no host sync per loss and step; read at log time), as a mean: DataParallel
            # (several GPUs, one process) gathers one value per GPU
            for name, value in logged.items():
                self._task_loss_sums[name] = self._task_loss_sums[name] + value.detach().float().mean()
                self._task_loss_counts[name] += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._task_loss_counts:
            for name, total in self._task_loss_sums.items():
                logs[name] = round(float(total) / self._task_loss_counts[name], 4)
            self._task_loss_sums.clear()
            self._task_loss_counts.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, model, trial):
        run_dir = self._get_output_dir(trial=trial)
        name = f"checkpoint-{self.state.global_step}"
        staging_root = os.path.join(run_dir, STAGING_DIR)
        staged, final = os.path.join(staging_root, name), os.path.join(run_dir, name)
        if self.args.should_save and os.path.exists(staged):
            shutil.rmtree(staged)  # left by a run killed mid-save
        self._barrier()
        self._get_output_dir = lambda trial=None: staging_root  # Trainer writes into the staging folder
        try:
            with disk_full_named(staging_root):  # "No space left on device", not torch's inline_container.cc message
                super()._save_checkpoint(model, trial)
        finally:
            del self._get_output_dir
        if self.args.should_save:
            with open(os.path.join(staged, STATE_FILE), "w") as handle:
                # the per-task loss sums since the last log go along, so the first log after a resume averages the
                # same micro-steps as the uninterrupted run's
                json.dump({"omni_position": self.omni_position, "global_step": self.state.global_step,
                           "task_loss_sums": {name: float(total) for name, total in self._task_loss_sums.items()},
                           "task_loss_counts": self._task_loss_counts}, handle)
        self._barrier()
        if self.args.should_save:
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(staged, final)  # atomic on one filesystem: the checkpoint appears complete or not at all
            if not os.listdir(staging_root):
                os.rmdir(staging_root)
            if self.state.best_model_checkpoint and self.state.best_model_checkpoint.startswith(staging_root):
                best_name = os.path.basename(self.state.best_model_checkpoint)
                self.state.best_model_checkpoint = os.path.join(run_dir, best_name)
            self._rotate_final_checkpoints(run_dir)
        self._barrier()

    def _rotate_final_checkpoints(self, run_dir: str):
        from transformers.trainer_utils import rotate_checkpoints

        rotate_checkpoints(
            output_dir=run_dir,
            save_total_limit=self.args.save_total_limit,
            best_model_checkpoint=self.state.best_model_checkpoint,
            use_mtime=True,
        )

    def _barrier(self):
        self.accelerator.wait_for_everyone()

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint is True or isinstance(resume_from_checkpoint, str):
            if resume_from_checkpoint is True:
                resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
                if resume_from_checkpoint is None:
                    raise ValueError(f"No complete checkpoint found in {self.args.output_dir} to resume from.")
            state_file = os.path.join(resume_from_checkpoint, STATE_FILE)
            if not os.path.exists(state_file):
                raise ValueError(
                    f"{resume_from_checkpoint} has no {STATE_FILE}: it was not written by "
                    "CommerceMMPretrainingTrainer, "
                    "so the Omni stream's position is unknown."
                )
            with open(state_file) as handle:
                state = json.load(handle)
            self.omni_position = state["omni_position"]
            self._task_loss_sums = defaultdict(float, state.get("task_loss_sums", {}))
            self._task_loss_counts = defaultdict(int, state.get("task_loss_counts", {}))
            self._omni_iterator = None
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    # ------------------------------------------------------------------------------------------ evaluation

    @contextlib.contextmanager
    def _gathered_parameters(self):
        """Whole parameters for code that calls the model's embedding methods directly, outside the forward of the
        wrapped root: FSDP keeps the root's own parameters (embeddings, projections) sharded between its forwards.
        FSDP2 (`fully_shard`, by accelerate or by `from_pretrained(distributed_config=...)`) unshards the root here
        (the inner blocks unshard in their own forward hooks); FSDP1 summons the full parameters. A no-op without
        FSDP."""
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

        model = self.model_wrapped
        if isinstance(model, FSDPModule):
            model.unshard()
            try:
                yield
            finally:
                model.reshard()
        elif isinstance(model, FullyShardedDataParallel):
            with FullyShardedDataParallel.summon_full_params(model, writeback=False):
                yield
        else:
            yield

    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Mean pretraining losses on the evaluation rows (full depth, fixed masks) and, with `eval_omni_dataset`,
        zero-shot retrieval metrics of each Omni source type against the products."""
        eval_dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        model = self.model.eval()
        sums, batches = defaultdict(float), defaultdict(int)
        generator = torch.Generator().manual_seed(self.args.seed)
        streams = []
        if eval_dataset is not None:
            loader = DataLoader(
                eval_dataset, batch_size=self.args.per_device_eval_batch_size, collate_fn=self.eval_collators[0]
            )
            streams.append((loader, lambda batch: self.eval_collators[0].mask(batch, generator)))
        if self.eval_omni_dataset is not None:
            loader = DataLoader(
                self.eval_omni_dataset, batch_size=self.args.per_device_eval_batch_size,
                collate_fn=self.eval_collators[1],
            )
            streams.append((loader, lambda batch: batch))
        for loader, prepare in streams:
            for batch in loader:
                outputs = model(**self._prepare_inputs(prepare(batch)), generator=generator)
                for task, value in outputs.losses.items():
                    sums[task] += float(value)
                    batches[task] += 1
        metrics = {
            f"{metric_key_prefix}_{task}_loss": sums[task] / batches[task]
            for task in PRETRAINING_TASKS
            if batches[task]
        }
        if metrics:
            weights = model.config.loss_weights
            metrics[f"{metric_key_prefix}_loss"] = sum(
                weights.get(task, 1.0) * sums[task] / batches[task] for task in PRETRAINING_TASKS if batches[task]
            )
        if self.eval_omni_dataset is not None:
            from ..evaluation.zero_shot import omni_retrieval_metrics

            with self._gathered_parameters():
                retrieval = omni_retrieval_metrics(
                    model.commercemm,
                    self.processing_class,
                    self.eval_omni_dataset,
                    batch_size=self.args.per_device_eval_batch_size,
                )
            metrics.update({f"{metric_key_prefix}_{key}": value for key, value in retrieval.items()})
        metrics = {
            key: (round(value, 4) if isinstance(value, float) and math.isfinite(value) else value)
            for key, value in metrics.items()
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


__all__ = ["CommerceMMPretrainingTrainer", "sample_depths"]
