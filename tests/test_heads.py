"""Fine-tuning heads: categorization (multi-class, multi-label; image, text or both) and retrieval (every direction)."""

import json
import math

import pytest
import torch
from helpers import TINY_COLOURS as COLOURS
from helpers import TINY_SHAPES as SHAPES
from helpers import tiny_config

from commercemm_hf import CommerceMMForProductCategorization, CommerceMMForRetrieval, CommerceMMModel
from commercemm_hf.modeling.modeling_commercemm_tasks import RETRIEVAL_TASKS


def train(model, batch, steps=40, lr=5e-4):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("modalities", ["both", "text", "image"])
def test_multi_class_categorization_learns_from_any_modality(tokenizer, head_inputs, modalities):
    inputs, shape_labels, _, _ = head_inputs
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), id2label=dict(enumerate(SHAPES)),
                         label2id={label: i for i, label in enumerate(SHAPES)})
    model = CommerceMMForProductCategorization(config)
    batch = {"labels": shape_labels}
    if modalities in ("both", "text"):
        batch.update(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    if modalities in ("both", "image"):
        batch["pixel_values"] = inputs["pixel_values"]
    # from scratch on 12 rows: a moderate rate, since 2e-3 without warm-up can collapse a tiny tower to uniform
    losses = train(model, batch)
    assert losses[-1] < 0.8 * losses[0]
    assert model(**batch).logits.shape == (12, 3)


def test_multi_label_categorization_and_round_trip(tokenizer, head_inputs, tmp_path):
    inputs, _, colour_hot, _ = head_inputs
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), id2label=dict(enumerate(COLOURS)),
                         label2id={label: i for i, label in enumerate(COLOURS)},
                         problem_type="multi_label_classification")
    model = CommerceMMForProductCategorization(config)
    batch = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                 pixel_values=inputs["pixel_values"], labels=colour_hot)
    losses = train(model, batch, steps=80)
    assert losses[-1] < 0.75 * losses[0]
    model.eval().save_pretrained(tmp_path / "head")
    reloaded = CommerceMMForProductCategorization.from_pretrained(tmp_path / "head").eval()
    assert reloaded.config.id2label[1] == "green" and reloaded.config.problem_type == "multi_label_classification"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)


def test_categorization_errors_name_the_problem(tokenizer, head_inputs):
    inputs, shape_labels, _, _ = head_inputs
    model = CommerceMMForProductCategorization(tiny_config(vocab_size=len(tokenizer), id2label=dict(enumerate(SHAPES))))
    with pytest.raises(ValueError, match="got neither"):
        model(labels=shape_labels)
    with pytest.raises(ValueError, match="must lie in 0..2"):
        model(input_ids=inputs["input_ids"], labels=shape_labels + 5)


@pytest.mark.parametrize("task", sorted(RETRIEVAL_TASKS))
def test_retrieval_head_learns_each_direction(tokenizer, head_inputs, task, tmp_path):
    inputs, _, _, sources = head_inputs
    source_kind, target_kind = RETRIEVAL_TASKS[task]
    torch.manual_seed(0)
    model = CommerceMMForRetrieval(tiny_config(vocab_size=len(tokenizer), retrieval_source=source_kind,
                                               retrieval_target=target_kind))
    # sources: queries (text), other views (image) or the product itself seen again (multimodal); targets: products
    source = {"text": dict(source_input_ids=sources["input_ids"], source_attention_mask=sources["attention_mask"]),
              "image": dict(source_pixel_values=sources["pixel_values"]),
              "multimodal": dict(source_input_ids=inputs["input_ids"], source_attention_mask=inputs["attention_mask"],
                                 source_pixel_values=sources["pixel_values"])}[source_kind]
    target = {"text": dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]),
              "image": dict(pixel_values=inputs["pixel_values"]),
              "multimodal": dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                 pixel_values=inputs["pixel_values"])}[target_kind]
    # a text tower trained from scratch sits on a plateau for ~40 steps before it separates short queries
    losses = train(model, {**source, **target}, steps=80 if source_kind == "text" else 40)
    # well below chance (uniform scores over the 12 targets), not merely below the first step
    assert min(losses[-5:]) < 0.7 * math.log(12)
    # the folder is a plain CommerceMMModel for embedding and search
    model.save_pretrained(tmp_path / "retrieval")
    assert isinstance(CommerceMMModel.from_pretrained(tmp_path / "retrieval"), CommerceMMModel)


def test_retrieval_head_refuses_inputs_that_cannot_give_its_embedding(tokenizer, head_inputs):
    inputs, _, _, _ = head_inputs
    model = CommerceMMForRetrieval(tiny_config(vocab_size=len(tokenizer), retrieval_source="text",
                                               retrieval_target="multimodal"))
    with pytest.raises(ValueError, match="multimodal embedding needs an image and a text"):
        model(source_input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])


def test_a_saved_retrieval_head_loads_back_the_way_trainer_resumes(tokenizer, tmp_path):
    """The folder is the encoder (a plain CommerceMMModel); Trainer's resume and --load_best_model_at_end load it
    with `model.load_state_dict(state_dict, strict=False)` into the head, which must take every weight."""
    from safetensors.torch import load_file

    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), retrieval_source="text", retrieval_target="multimodal")
    trained, fresh = CommerceMMForRetrieval(config), CommerceMMForRetrieval(config)
    trained.save_pretrained(tmp_path / "checkpoint")
    assert json.loads((tmp_path / "checkpoint" / "config.json").read_text())["architectures"] == ["CommerceMMModel"]
    result = fresh.load_state_dict(load_file(tmp_path / "checkpoint" / "model.safetensors"), strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    for (name, value), (_, expected) in zip(fresh.state_dict().items(), trained.state_dict().items()):
        assert torch.equal(value, expected), name
    # the head's own (prefixed) state dict, as DeepSpeed / FSDP saves hand it over, is saved as the encoder too
    trained.save_pretrained(tmp_path / "from_state_dict", state_dict=trained.state_dict())
    saved = load_file(tmp_path / "from_state_dict" / "model.safetensors")
    assert saved and not any(key.startswith("commercemm.") for key in saved)


def test_hard_negative_batches_group_similar_products_and_replay_exactly():
    """`--hard_negatives`: each batch holds products that are close in the embedding space, every row once per
    epoch, a product's rows together; the same (seed, epoch) gives the same order (a resumed run skips the very
    batches it trained), another epoch another one."""
    from commercemm_hf.training.hard_negatives import HardNegativeSampler, cluster_products

    generator = torch.Generator().manual_seed(0)
    # 8 tight groups of 4 products around 8 random directions
    centres = torch.nn.functional.normalize(torch.randn(8, 16, generator=generator), dim=-1)
    embeddings = centres.repeat_interleave(4, dim=0) + 0.01 * torch.randn(32, 16, generator=generator)
    group = torch.arange(32) // 4
    clusters = cluster_products(torch.nn.functional.normalize(embeddings, dim=-1), 4, torch.Generator().manual_seed(1))
    assert sorted(len(cluster) for cluster in clusters) == [4] * 8
    assert all(len(set(group[cluster].tolist())) == 1 for cluster in clusters)  # each batch is one group
    assert sorted(torch.cat(clusters).tolist()) == list(range(32))
    # 40 rows: products 0-7 have two rows each (two queries)
    row_products = list(range(32)) + list(range(8))
    sampler = HardNegativeSampler(embeddings, row_products, batch_size=4, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(40)) and len(sampler) == 40
    assert first == list(sampler)  # the same epoch again: the same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == list(range(40)) and second != first
    for order in (first, second):  # the two rows of a product are next to each other
        position = {row: index for index, row in enumerate(order)}
        assert all(abs(position[product] - position[32 + product]) == 1 for product in range(8))
