"""The two-pass pretraining step under the engines users train with: device-safe randomness, one optimizer step per
training step, gradient accumulation scaled once, the first pass kept out of gradient synchronisation, and the
per-task loss logs continuing exactly across a resume. Multi-process engines (DDP, FSDP, DeepSpeed) run in
tests/test_distributed.py."""

import pytest
import torch
from test_pretraining import Crash, losses_by_step, make_trainer
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves
from transformers import Trainer, TrainerCallback

from commercemm_hf.modeling.modeling_commercemm_pretraining import sample_in_proportion
from commercemm_hf.training.collators import random_patch_mask, shape_draws


class GeneratorAudit(TorchFunctionMode):
    """Records every torch call that is handed a `torch.Generator`: its name, the generator's device, the device it
    draws on, and the devices of the tensors it consumes."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        generator = kwargs.get("generator")
        if isinstance(generator, torch.Generator):
            tensors = [leaf for leaf in tree_leaves((args, kwargs)) if isinstance(leaf, torch.Tensor)]
            self.calls.append((getattr(func, "__name__", str(func)), generator.device,
                               torch.device(kwargs.get("device") or "cpu"), [t.device for t in tensors]))
        return func(*args, **kwargs)


def test_every_random_draw_of_a_training_step_comes_from_a_shape_on_the_generators_device(
        tokenizer, processor, engine_datasets, tmp_path):
    """On CUDA, an op handed a CPU generator together with a CUDA tensor raises ("Expected a 'cuda' device type for
    generator"); a CPU run cannot show that. So the step's randomness must never meet a data tensor: every call
    with a generator draws from a shape alone, on the generator's own device, and only the draws move to the
    batch's device. Transformers' MLM masker (bernoulli on a probability matrix) and `multinomial` on the ITM
    similarities both broke this."""
    trainer = make_trainer(tokenizer, processor, engine_datasets, tmp_path, max_steps=2, save_steps=10)
    audit = GeneratorAudit()
    with audit:
        trainer.train()
    for name, generator_device, draw_device, tensor_devices in audit.calls:
        assert tensor_devices == [], f"{name} consumed tensors on {tensor_devices} with a {generator_device} generator"
        assert draw_device == generator_device, (name, draw_device, generator_device)
    drawn = [name for name, *_ in audit.calls]
    assert drawn.count("rand") >= 2 * 3, drawn  # per step at least: the MLM draws, the MIM mask, the ITM negatives


def test_shape_draws_and_sampling_put_their_results_on_the_requested_device():
    generator = torch.Generator().manual_seed(0)
    assert shape_draws(generator, 2, 3, device="meta").device.type == "meta"
    assert random_patch_mask(2, 4, 0.5, generator, device="meta").device.type == "meta"
    # sampling in proportion: zero weights are never drawn, the frequencies follow the weights
    weights = torch.tensor([[0.0, 1.0, 3.0, 0.0]]).repeat(4000, 1)
    drawn = sample_in_proportion(weights, torch.Generator().manual_seed(1))
    counts = torch.bincount(drawn, minlength=4)
    assert counts[0] == counts[3] == 0
    assert counts[2] / counts[1] == pytest.approx(3.0, rel=0.15)
    # the same seed draws the same negatives
    torch.testing.assert_close(drawn, sample_in_proportion(weights, torch.Generator().manual_seed(1)))


class Recorder(TrainerCallback):
    def __init__(self):
        self.optimizer_steps = 0

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.optimizer_steps += 1


@pytest.mark.parametrize("accumulation", [1, 2])
def test_each_pass_is_trainers_own_training_step_and_the_optimizer_steps_once_per_step(
        tokenizer, processor, engine_datasets, tmp_path, monkeypatch, accumulation):
    passes, unscaled = [], []
    original_step, original_loss = Trainer.training_step, Trainer.compute_loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = original_step(self, model, inputs, num_items_in_batch)
        passes.append((self.accelerator.sync_gradients, float(loss)))
        return loss

    trainer = make_trainer(tokenizer, processor, engine_datasets, tmp_path, max_steps=3, save_steps=10,
                           gradient_accumulation_steps=accumulation)
    original_compute = type(trainer).compute_loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = original_compute(self, model, inputs, return_outputs, num_items_in_batch)
        unscaled.append(float(loss))
        return loss

    monkeypatch.setattr(Trainer, "training_step", training_step)
    monkeypatch.setattr(type(trainer), "compute_loss", compute_loss)
    recorder = Recorder()
    trainer.add_callback(recorder)
    torch_steps = []
    trainer.create_optimizer()
    trainer.optimizer.register_step_post_hook(lambda *args: torch_steps.append(1))
    trainer.train()
    assert original_loss is Trainer.compute_loss
    micro_steps = 3 * accumulation
    assert len(passes) == 2 * micro_steps  # two passes, each through Trainer.training_step
    # gradients are synchronised on the last pass of the last micro-step of each step only
    expected_sync = [False] * (2 * accumulation - 1) + [True]
    assert [sync for sync, _ in passes] == expected_sync * 3
    # the optimizer and the scheduler stepped once per training step
    assert recorder.optimizer_steps == len(torch_steps) == 3 == trainer.state.global_step
    assert trainer.lr_scheduler.last_epoch == 3
    # each pass's loss divided by the accumulation steps once
    for (_, scaled), loss in zip(passes, unscaled):
        assert scaled == pytest.approx(loss / accumulation, rel=1e-6)


def test_the_first_log_after_a_resume_averages_the_same_micro_steps(tokenizer, processor, engine_datasets, tmp_path):
    """A checkpoint in the middle of a logging window keeps the per-task sums since the last log."""
    common = dict(max_steps=6, logging_steps=2, save_steps=3)
    uninterrupted = make_trainer(tokenizer, processor, engine_datasets, tmp_path / "a", **common)
    uninterrupted.train()
    interrupted = make_trainer(tokenizer, processor, engine_datasets, tmp_path / "b", callbacks=[Crash(4)], **common)
    with pytest.raises(RuntimeError, match="simulated crash"):
        interrupted.train()
    resumed = make_trainer(tokenizer, processor, engine_datasets, tmp_path / "b", **common)
    resumed.train(resume_from_checkpoint=True)
    expected, got = losses_by_step(uninterrupted), losses_by_step(resumed)
    assert sorted(expected) == [2, 4, 6] and 4 in got
    for name in ("mlm_loss", "itc_loss", "omni_text_to_multimodal_loss", "itm_accuracy"):
        assert got[4][name] == pytest.approx(expected[4][name], rel=1e-4, abs=1e-4), name


def test_logit_scale_is_one_dimensional_and_older_scalar_checkpoints_still_load(tmp_path):
    """FSDP2's `fully_shard` and DeepSpeed (ZeRO 0-2, `p.data.view(torch.uint8)` at start-up) refuse 0-dim
    parameters; folders saved while `logit_scale` was 0-dim keep loading."""
    from helpers import tiny_config
    from safetensors.torch import load_file, save_file

    from commercemm_hf import CommerceMMForPreTraining, CommerceMMModel

    model = CommerceMMModel(tiny_config())
    assert all(parameter.dim() >= 1 for parameter in model.parameters())
    with torch.no_grad():
        model.logit_scale.fill_(3.21)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    assert weights["logit_scale"].shape == (1,)
    weights["logit_scale"] = weights["logit_scale"].reshape(())  # as the package saved it before
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    for model_class, owner in ((CommerceMMModel, lambda m: m), (CommerceMMForPreTraining, lambda m: m.commercemm)):
        loaded = owner(model_class.from_pretrained(tmp_path))
        assert loaded.logit_scale.shape == (1,) and float(loaded.logit_scale) == pytest.approx(3.21)


def test_a_full_disk_at_a_pretraining_checkpoint_says_no_space_left(tokenizer, processor, engine_datasets, small_disk):
    trainer = make_trainer(tokenizer, processor, engine_datasets, small_disk / "out", max_steps=2, save_steps=1)
    with pytest.raises(OSError, match=r"No space left on device while saving the checkpoint to .*small-disk") as error:
        trainer.train()
    assert error.value.errno == 28
