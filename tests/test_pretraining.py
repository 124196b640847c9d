"""CommerceMMForPreTraining (14 losses), its collators, and CommerceMMPretrainingTrainer (two passes per step,
per-task logging, modality randomization, crash-safe checkpoints and exact resume)."""

import copy
import math
import os
import shutil

import pytest
import torch
from helpers import tiny_config, tiny_datasets
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from commercemm_hf import CommerceMMForPreTraining
from commercemm_hf.modeling import OMNI_TASKS, PRETRAINING_TASKS
from commercemm_hf.modeling.modeling_commercemm_pretraining import contrastive_loss
from commercemm_hf.training import (
    CommerceMMOmniCollator,
    CommerceMMPretrainingTrainer,
    sample_depths,
)


def new_model(tokenizer, **overrides):
    torch.manual_seed(0)
    return CommerceMMForPreTraining(tiny_config(vocab_size=len(tokenizer), **overrides))


def test_all_fourteen_losses_by_name(tokenizer, pretraining_batches):
    collator, image_text, omni = pretraining_batches
    model = new_model(tokenizer)
    generator = torch.Generator().manual_seed(0)
    both = model(**collator.mask(dict(image_text), generator), **omni, generator=generator)
    assert sorted(both.losses) == sorted(PRETRAINING_TASKS)
    assert all(torch.isfinite(value) for value in both.losses.values())
    weights = model.config.loss_weights
    torch.testing.assert_close(both.loss, sum(weights[task] * value for task, value in both.losses.items()))
    assert 0.0 <= float(both.itm_accuracy) <= 1.0
    # the entropy of a mean over prototypes: at most log(number of prototypes), reached by the uniform mean
    assert 0.0 < float(both.mim_kl_target_usage_entropy) <= math.log(model.config.mim_num_prototypes) + 1e-5


@pytest.mark.parametrize("kept", [("itc",), ("itm", "omni_text_to_image"), ("mlm",), ("mim_kl", "mim_fr", "itc")])
def test_tasks_with_zero_weight_are_not_computed_and_the_rest_are_unchanged(tokenizer, pretraining_batches, kept):
    collator, image_text, omni = pretraining_batches
    weights = {task: (1.0 if task in kept else 0.0) for task in PRETRAINING_TASKS}
    full, ablated = new_model(tokenizer), new_model(tokenizer, loss_weights=weights)
    assert ablated.active_tasks() == set(kept)
    inputs = collator.mask(dict(image_text), torch.Generator().manual_seed(0))
    outputs = [model(**inputs, **omni, generator=torch.Generator().manual_seed(1)) for model in (full, ablated)]
    assert set(outputs[1].losses) == set(kept)
    for task in kept:  # the same masks and ITM negatives, so the same values as when every task runs
        torch.testing.assert_close(outputs[1].losses[task], outputs[0].losses[task])
    outputs[1].loss.backward()
    assert ablated.commercemm.multimodal_model.cls_token.grad is None or kept != ("itc",)


def test_collator_masking(tokenizer, pretraining_batches, processor):
    collator, image_text, _ = pretraining_batches
    masked = collator.mask(dict(image_text), torch.Generator().manual_seed(1))
    labels, ids = masked["mlm_labels"], image_text["input_ids"]
    chosen = labels.ne(-100)
    assert chosen.any()
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    assert not (chosen & special).any()  # [CLS], [SEP], [PAD] are never masked
    assert torch.equal(labels[chosen], ids[chosen])
    assert (masked["mlm_input_ids"][chosen] == tokenizer.mask_token_id).float().mean() > 0.5
    num_patches = masked["bool_masked_pos"].shape[1]
    assert (masked["bool_masked_pos"].sum(1) == round(0.5 * num_patches)).all()  # exactly the configured ratio
    again = collator.mask(dict(image_text), torch.Generator().manual_seed(1))
    assert torch.equal(again["mlm_input_ids"], masked["mlm_input_ids"])
    assert torch.equal(again["bool_masked_pos"], masked["bool_masked_pos"])


def test_a_source_contributes_only_what_it_has(tokenizer, processor, pretraining_datasets):
    _, omni = pretraining_datasets
    model = new_model(tokenizer)
    collator = CommerceMMOmniCollator(processor, model.config)
    queries = collator([row for row in omni if row["source_type"] == "query"])
    assert "source_pixel_values" not in queries
    assert sorted(model(**queries).losses) == sorted(t for t in OMNI_TASKS if t.startswith("omni_text_"))
    views = collator([row for row in omni if row["source_type"] == "view"])
    assert sorted(model(**views).losses) == sorted(t for t in OMNI_TASKS if t.startswith("omni_image_"))
    posts = collator([row for row in omni if row["source_type"] == "post"])
    assert sorted(model(**posts).losses) == sorted(OMNI_TASKS)
    with pytest.raises(ValueError, match=r"Omni rows \[0\] have a source with neither text nor image"):
        collator([{**omni[0], "source_text": "  ", "source_image": None}])


def test_omni_pairs_and_loss_weights_are_honoured(tokenizer, pretraining_batches):
    _, _, omni = pretraining_batches
    model = new_model(tokenizer, omni_pairs=["omni_text_to_multimodal"], loss_weights={"omni_text_to_multimodal": 2.0})
    out = model(**omni)
    assert list(out.losses) == ["omni_text_to_multimodal"]
    torch.testing.assert_close(out.loss, 2.0 * out.omni_text_to_multimodal_loss)


def test_itm_negatives_come_from_a_generator_never_the_global_rng(tokenizer, pretraining_batches):
    collator, image_text, _ = pretraining_batches
    inputs = collator.mask(dict(image_text), torch.Generator().manual_seed(0))
    model = new_model(tokenizer, loss_weights={"itm": 1.0, "itc": 0.0, "mlm": 0.0, "mim_kl": 0.0, "mim_fr": 0.0}).eval()
    twin = copy.deepcopy(model)
    first = model(**inputs).itm_loss
    torch.rand(1000)  # other draws from the global RNG do not move the model's own negatives
    torch.testing.assert_close(twin(**inputs).itm_loss, first, rtol=0, atol=0)
    seeded = [model(**inputs, generator=seed).itm_loss for seed in (5, 5, 6)]
    assert torch.equal(seeded[0], seeded[1]) and not torch.equal(seeded[0], seeded[2])


def test_return_dict_false_gives_a_tuple_with_the_loss_first(tokenizer, pretraining_batches):
    _, _, omni = pretraining_batches
    model = new_model(tokenizer)
    as_dict = model(**omni)
    as_tuple = model(**omni, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], as_dict.loss)


def test_mim_prototypes_are_initialised_by_init_weights(tokenizer, tmp_path):
    model = new_model(tokenizer)
    assert 0.8 < float(model.mim_prototypes.std()) < 1.2  # `_init_weights`' N(0, 1)
    # a checkpoint without the pretraining heads (a base model): from_pretrained initialises the prototypes
    model.commercemm.save_pretrained(tmp_path / "base")
    loaded = CommerceMMForPreTraining.from_pretrained(tmp_path / "base")
    assert torch.isfinite(loaded.mim_prototypes).all() and 0.8 < float(loaded.mim_prototypes.std()) < 1.2
    assert torch.equal(loaded.mim_center, torch.zeros_like(loaded.mim_center))
    # and one with them keeps them
    model.save_pretrained(tmp_path / "full")
    assert torch.equal(CommerceMMForPreTraining.from_pretrained(tmp_path / "full").mim_prototypes, model.mim_prototypes)


def test_contrastive_loss_does_not_push_apart_copies_of_one_product():
    queries = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    candidates = torch.cat([queries[:2], queries[:1]])  # candidate 2 is product 0 again
    ids = torch.tensor([7, 8, 7])
    plain = contrastive_loss(queries, candidates, torch.tensor(10.0))
    aware = contrastive_loss(queries, candidates, torch.tensor(10.0), ids, ids)
    assert aware < plain


def test_each_loss_decreases_and_mim_targets_do_not_collapse(tokenizer, pretraining_batches):
    collator, image_text, omni = pretraining_batches
    model = new_model(tokenizer, modality_randomization=False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    history = []
    for step in range(40):
        generator = torch.Generator().manual_seed(step)
        first = model(**collator.mask(dict(image_text), generator), generator=generator)
        second = model(**omni)
        (first.loss + second.loss).backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append({**{k: float(v) for k, v in {**first.losses, **second.losses}.items()},
                        "usage": float(first.mim_kl_target_usage_entropy)})
    for task in PRETRAINING_TASKS:
        start = sum(h[task] for h in history[:5]) / 5
        end = sum(h[task] for h in history[-5:]) / 5
        assert end < start, f"{task}: {start:.3f} -> {end:.3f}"
    # the mean teacher distribution keeps using several prototypes (a collapsed teacher would give ~0)
    assert min(h["usage"] for h in history[-10:]) > math.log(2)


def test_depth_sampling_is_deterministic_and_can_be_turned_off():
    config = tiny_config(full_depth_probability=0.3)
    draws = [sample_depths(config, seed=0, step=step) for step in range(200)]
    assert draws == [sample_depths(config, seed=0, step=step) for step in range(200)]
    full = {"text_depth": None, "image_depth": None, "multimodal_depth": None}
    assert 0.15 < sum(d == full for d in draws) / 200 < 0.6
    assert {d["text_depth"] for d in draws} == {None, 1, 2}
    assert all(sample_depths(config, 0, step, enabled=False) == full for step in range(20))


def test_truncate_gives_the_same_outputs_and_saves_alone(tokenizer, tmp_path):
    model = new_model(tokenizer).commercemm.eval()
    smaller = model.truncate(text_depth=1, image_depth=1, multimodal_depth=1)
    assert len(smaller.text_model.encoder.layers) == 1 and smaller.config.text_depth_choices == [1]
    inputs = dict(input_ids=torch.tensor([[2, 40, 41, 3]]), pixel_values=torch.randn(1, 3, 32, 32))
    with torch.no_grad():
        expected = model(**inputs, text_depth=1, image_depth=1, multimodal_depth=1).multimodal_embeds
        torch.testing.assert_close(smaller(**inputs).multimodal_embeds, expected)
        smaller.save_pretrained(tmp_path)
        reloaded = type(smaller).from_pretrained(tmp_path).eval()
        torch.testing.assert_close(reloaded(**inputs).multimodal_embeds, expected)
    assert sum(p.numel() for p in smaller.parameters()) < sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------- the trainer


def make_trainer(tokenizer, processor, pretraining_datasets, output_dir, max_steps=6, callbacks=None, **arguments):
    image_text, omni = pretraining_datasets
    arguments = {"logging_steps": 1, "save_steps": 3, **arguments}
    args = TrainingArguments(
        output_dir, max_steps=max_steps, per_device_train_batch_size=4, report_to=[], seed=0, learning_rate=1e-3,
        use_cpu=True, disable_tqdm=True, **arguments,
    )
    return CommerceMMPretrainingTrainer(
        model=new_model(tokenizer), args=args, train_dataset=image_text, omni_dataset=omni, processor=processor,
        omni_batch_size=5, eval_dataset=image_text, eval_omni_dataset=omni, callbacks=callbacks,
    )


class CountPasses:
    def __init__(self, model):
        self.calls = 0
        model.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        self.calls += 1


@pytest.mark.parametrize("accumulation", [1, 2])
def test_two_forward_backward_passes_per_micro_step_and_every_loss_logged(tokenizer, processor, tmp_path,
                                                                           accumulation):
    data = tiny_datasets(16)  # 4 batches an epoch: whole accumulation groups
    trainer = make_trainer(tokenizer, processor, data, tmp_path, max_steps=4, gradient_accumulation_steps=accumulation)
    counter = CountPasses(trainer.model)
    optimizer_steps = []
    trainer.add_callback(type("Steps", (TrainerCallback,), {
        "on_optimizer_step": lambda self, args, state, control, **kw: optimizer_steps.append(state.global_step)}))
    trainer.train()
    assert counter.calls == 2 * 4 * accumulation and len(optimizer_steps) == 4
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert len(logged) == 4
    names = set().union(*logged)
    assert {f"{task}_loss" for task in PRETRAINING_TASKS} <= names
    assert {"mim_kl_target_entropy", "mim_kl_target_usage_entropy", "itm_accuracy"} <= names
    metrics = trainer.evaluate()
    assert "eval_query_to_product_recall@10" in metrics and "eval_itc_loss" in metrics


class Crash(TrainerCallback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise RuntimeError("simulated crash")


def losses_by_step(trainer):
    return {row["step"]: row for row in trainer.state.log_history if "loss" in row}


def test_crash_and_resume_reach_the_same_losses(tokenizer, processor, pretraining_datasets, tmp_path):
    uninterrupted = make_trainer(tokenizer, processor, pretraining_datasets, tmp_path / "a")
    uninterrupted.train()
    crashed = make_trainer(tokenizer, processor, pretraining_datasets, tmp_path / "b", callbacks=[Crash(5)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train()
    assert get_last_checkpoint(str(tmp_path / "b")).endswith("checkpoint-3")
    resumed = make_trainer(tokenizer, processor, pretraining_datasets, tmp_path / "b")
    resumed.train(resume_from_checkpoint=True)
    expected, got = losses_by_step(uninterrupted), losses_by_step(resumed)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]  # 1-3 restored from the checkpoint's history, 4-6 trained again
    for step in (1, 2, 3, 4, 5, 6):
        for name in ("loss", "mlm_loss", "itm_loss", "mim_kl_loss", "omni_image_to_multimodal_loss"):
            assert got[step][name] == pytest.approx(expected[step][name], rel=1e-4, abs=1e-4), (step, name)


def test_a_kill_mid_save_leaves_no_checkpoint_to_resume_from(tokenizer, processor, pretraining_datasets, tmp_path,
                                                              monkeypatch):
    trainer = make_trainer(tokenizer, processor, pretraining_datasets, tmp_path)
    original = CommerceMMPretrainingTrainer._save_optimizer_and_scheduler

    def dies_at_step_6(self, output_dir):
        if self.state.global_step == 6:
            raise KeyboardInterrupt("killed while saving")
        return original(self, output_dir)

    monkeypatch.setattr(CommerceMMPretrainingTrainer, "_save_optimizer_and_scheduler", dies_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert not (tmp_path / "checkpoint-6").exists()
    assert (tmp_path / ".staging" / "checkpoint-6").exists()  # the half-written one, out of resume's sight
    assert get_last_checkpoint(str(tmp_path)).endswith("checkpoint-3")
    monkeypatch.setattr(CommerceMMPretrainingTrainer, "_save_optimizer_and_scheduler", original)
    resumed = make_trainer(tokenizer, processor, pretraining_datasets, tmp_path)
    resumed.train(resume_from_checkpoint=True)
    assert (tmp_path / "checkpoint-6").exists() and not (tmp_path / ".staging").exists()


def test_resume_refuses_a_checkpoint_without_stream_state(tokenizer, processor, pretraining_datasets, tmp_path):
    trainer = make_trainer(tokenizer, processor, pretraining_datasets, tmp_path, max_steps=3)
    trainer.train()
    os.remove(tmp_path / "checkpoint-3" / "commercemm_pretraining_state.json")
    with pytest.raises(ValueError, match="Omni stream's position is unknown"):
        make_trainer(tokenizer, processor, pretraining_datasets, tmp_path).train(resume_from_checkpoint=True)
    shutil.rmtree(tmp_path / "checkpoint-3")
    with pytest.raises(ValueError, match="No complete checkpoint"):
        make_trainer(tokenizer, processor, pretraining_datasets, tmp_path).train(resume_from_checkpoint=True)
