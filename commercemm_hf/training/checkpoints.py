"""What a run says about its checkpoints: their size on disk (optimizer state included) as they are written, the
example scripts' default `save_total_limit`, and whether a checkpoint already ends the run (nothing to resume).

A checkpoint holds the weights *and* the optimizer state (AdamW keeps two moments per parameter, so about three
times the weights): three steps of the `small` preset write ~800 MB per checkpoint. `CheckpointSizeCallback` says
so at the first save, with the limit in force; the example scripts keep `DEFAULT_SAVE_TOTAL_LIMIT` checkpoints
unless `--save_total_limit` is given.

Example (a run adds it with `trainer.add_callback(CheckpointSizeCallback())`; here it is called as the Trainer calls
it after writing a checkpoint, on a stand-in 3 MB checkpoint):
    >>> import logging, os, sys, tempfile
    >>> from transformers import TrainerControl, TrainerState, TrainingArguments
    >>> from commercemm_hf.training.checkpoints import CheckpointSizeCallback
    >>> run = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(run, "checkpoint-500"))
    >>> for name, size in [("model.safetensors", 1_000_000), ("optimizer.pt", 2_000_000)]:
    ...     with open(os.path.join(run, "checkpoint-500", name), "wb") as file:
    ...         _ = file.write(bytes(size))
    >>> handler = logging.StreamHandler(sys.stdout)
    >>> logging.getLogger("commercemm_hf").addHandler(handler)
    >>> args = TrainingArguments(run, save_total_limit=2, report_to=[])
    >>> state = TrainerState(global_step=500)
    >>> CheckpointSizeCallback().on_save(args, state, TrainerControl())  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    Saved checkpoint-500: 3.0 MB (model weights and trainer state 1.0 MB, optimizer state 2.0 MB) in ...;
    keeping the last 2 checkpoints (save_total_limit).
    >>> logging.getLogger("commercemm_hf").removeHandler(handler)
"""

from __future__ import annotations

import json
import logging
import os

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


logger = logging.getLogger(__name__)

#: Checkpoints the example scripts keep when `--save_total_limit` is not given: the last one to resume from, and the
#: one before it in case the last save was interrupted.
DEFAULT_SAVE_TOTAL_LIMIT = 2

_OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin", "scheduler.pt")


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def folder_size(folder: str) -> tuple[int, int]:
    """(bytes of every file under `folder`, bytes of its optimizer / scheduler state)."""
    total = optimizer = 0
    for root, _, files in os.walk(folder):
        for name in files:
            size = os.path.getsize(os.path.join(root, name))
            total += size
            if name in _OPTIMIZER_FILES or name.startswith("optimizer"):
                optimizer += size
    return total, optimizer


class CheckpointSizeCallback(TrainerCallback):
    """Log each checkpoint's size as it is saved (the first at WARNING, later ones at INFO) with the
    `save_total_limit` in force, so the disk a run needs is known after its first save."""

    def __init__(self):
        self.saves = 0

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if not os.path.isdir(folder):
            return
        total, optimizer = folder_size(folder)
        plural = "s" if (args.save_total_limit or 0) > 1 else ""
        limit = (f"keeping the last {args.save_total_limit} checkpoint{plural} (save_total_limit)"
                 if args.save_total_limit
                 else "keeping every checkpoint (set save_total_limit to keep only the last ones)")
        message = (f"Saved {os.path.basename(folder)}: {megabytes(total)} (model weights and trainer state "
                   f"{megabytes(total - optimizer)}, optimizer state {megabytes(optimizer)}) in {args.output_dir}; "
                   f"{limit}.")
        logger.log(logging.WARNING if self.saves == 0 else logging.INFO, message)
        self.saves += 1


def trainer_state(checkpoint: str | None) -> dict | None:
    """The `trainer_state.json` of a checkpoint folder, or None."""
    if not checkpoint or not isinstance(checkpoint, str):
        return None
    path = os.path.join(checkpoint, "trainer_state.json")
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def finished_run(checkpoint: str | None, args) -> dict | None:
    """The state of `checkpoint` when it already ends the run `args` asks for (its step reaches `--max_steps`, or
    the steps of the same `--num_train_epochs`), else None. Resuming such a checkpoint trains nothing (or, in
    transformers 5.24 with `max_steps`, one step past the end), so the caller should load it instead of training."""
    state = trainer_state(checkpoint)
    if state is None or not state.get("global_step"):
        return None
    step = state["global_step"]
    if args.max_steps is not None and args.max_steps > 0:
        return state if step >= args.max_steps else None
    same_epochs = args.num_train_epochs <= state.get("num_train_epochs", float("inf"))
    return state if same_epochs and step >= state.get("max_steps", float("inf")) else None


__all__ = ["CheckpointSizeCallback", "DEFAULT_SAVE_TOTAL_LIMIT", "finished_run", "folder_size", "megabytes",
           "trainer_state"]
