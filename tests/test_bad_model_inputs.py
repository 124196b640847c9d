"""Bad configs, checkpoints and model inputs end in an error naming the field, key or value (issue 14)."""

import math

import pytest
import torch
from helpers import tiny_config
from safetensors.torch import load_file, save_file

from commercemm_hf import CommerceMMConfig, CommerceMMModel, CommerceMMTextConfig
from commercemm_hf.modeling.modeling_commercemm_tasks import CommerceMMForProductCategorization


# ----------------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("overrides, message", [
    (dict(text_config=dict(layer_norm_eps=-1.0)), r"CommerceMMTextConfig.layer_norm_eps must be > 0.*-1.0"),
    (dict(vision_config=dict(layer_norm_eps=0.0)), r"CommerceMMVisionConfig.layer_norm_eps must be > 0"),
    (dict(text_config=dict(type_vocab_size=-1)), r"type_vocab_size must be >= 0.*-1"),
    (dict(logit_scale_init_value=math.nan), r"logit_scale_init_value must be finite, got nan"),
    (dict(max_logit_scale=math.inf), r"max_logit_scale must be finite"),
    (dict(initializer_range=-1.0), r"CommerceMMConfig.initializer_range must be > 0"),
    (dict(multimodal_config=dict(initializer_range=0.0)), r"CommerceMMMultimodalConfig.initializer_range must be > 0"),
    (dict(text_config=dict(hidden_act="nope")), r"hidden_act='nope' is not a known activation.*gelu"),
    (dict(mim_teacher_temperature=0.0), r"mim_teacher_temperature must be > 0"),
    (dict(mim_center_momentum=1.5), r"mim_center_momentum must be >= 0 and <= 1"),
    (dict(full_depth_probability=math.nan), r"full_depth_probability must be finite"),
    (dict(loss_weights={"mlm": math.inf}), r"loss_weights must be finite numbers; not for \['mlm'\]"),
])
def test_config_values_outside_their_domain_are_named(overrides, message):
    with pytest.raises(Exception, match=message):
        tiny_config(**overrides)


def test_text_config_of_no_token_types_stays_valid():
    assert CommerceMMTextConfig(type_vocab_size=0).type_vocab_size == 0


@pytest.mark.parametrize("content", ["[1, 2]", "null", '"text"'])
def test_config_json_that_is_not_an_object_is_named(tmp_path, content):
    tiny_config().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(content, encoding="utf-8")
    with pytest.raises(OSError, match=r"config.json holds a JSON (list|NoneType|str), not an object"):
        CommerceMMConfig.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="not an object"):
        CommerceMMModel.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------------ checkpoints


def _rewrite(folder, change):
    weights = load_file(folder / "model.safetensors")
    change(weights)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def test_missing_backbone_weights_are_an_error_unless_allowed(saved_tiny_model):
    model, folder = saved_tiny_model
    key = "text_model.encoder.layers.0.mlp.fc1.weight"
    _rewrite(folder, lambda weights: weights.pop(key))
    with pytest.raises(ValueError, match=rf"backbone weights are missing: \['{key}'\].*allow_partial_load=True"):
        CommerceMMModel.from_pretrained(folder)
    partial, info = CommerceMMModel.from_pretrained(folder, allow_partial_load=True, output_loading_info=True)
    assert key in info["missing_keys"]
    torch.testing.assert_close(partial.logit_scale, model.logit_scale)


def test_unexpected_backbone_weights_are_an_error(saved_tiny_model):
    model, folder = saved_tiny_model
    key = "text_model.encoder.layers.7.mlp.fc1.weight"
    _rewrite(folder, lambda weights: weights.update({key: torch.ones(2)}))
    with pytest.raises(ValueError, match=r"have no place in this model.*layers.7"):
        CommerceMMModel.from_pretrained(folder)
    partial, info = CommerceMMModel.from_pretrained(folder, allow_partial_load=True, output_loading_info=True)
    assert key in info["unexpected_keys"] and not info["missing_keys"]
    torch.testing.assert_close(partial.state_dict(), model.state_dict())  # the rest loaded as saved


def test_heads_absent_or_of_other_models_load_as_in_transformers(saved_tiny_model, tmp_path):
    model, folder = saved_tiny_model
    task = CommerceMMForProductCategorization.from_pretrained(folder, num_labels=3)  # a fresh head on a base
    torch.testing.assert_close(task.commercemm.logit_scale, model.logit_scale)
    task.save_pretrained(tmp_path / "task")
    base = CommerceMMModel.from_pretrained(tmp_path / "task")  # the classifier is another model's head
    torch.testing.assert_close(base.text_projection.weight, model.text_projection.weight)
    _rewrite(tmp_path / "task", lambda weights: weights.pop("classifier.bias"))
    with pytest.raises(ValueError, match=r"the head 'classifier' is only partly in the checkpoint.*classifier.bias"):
        CommerceMMForProductCategorization.from_pretrained(tmp_path / "task")


def test_non_finite_weights_are_an_error(saved_tiny_model):
    _, folder = saved_tiny_model

    def poison(weights):
        weights["multimodal_model.encoder.layers.0.mlp.fc2.bias"][3] = math.nan
    _rewrite(folder, poison)
    with pytest.raises(ValueError, match=r"1 weights hold NaN or infinite values.*layers.0.mlp.fc2.bias"):
        CommerceMMModel.from_pretrained(folder)


def test_integer_tensors_are_not_cast_to_float_weights(saved_tiny_model):
    _, folder = saved_tiny_model
    key = "image_projection.weight"

    def as_int(weights):
        weights[key] = weights[key].round().to(torch.int64)
    _rewrite(folder, as_int)
    with pytest.raises(ValueError, match=rf"'{key}' .* has dtype I64, but the model's is torch.float32"):
        CommerceMMModel.from_pretrained(folder)


# ------------------------------------------------------------------------------------------------------ model inputs


@pytest.mark.parametrize("call, message", [
    (lambda m: m(input_ids=torch.zeros(0, 5, dtype=torch.long)), r"input_ids is a batch of 0 texts"),
    (lambda m: m(pixel_values=torch.zeros(0, 3, 32, 32)), r"pixel_values is a batch of 0 images"),
    (lambda m: m(input_ids=torch.zeros(2, 0, dtype=torch.long)), r"input_ids holds texts of 0 tokens"),
    (lambda m: m.get_text_features(input_ids=None), r"input_ids is None"),
    (lambda m: m.get_multimodal_features(input_ids=None, pixel_values=torch.zeros(1, 3, 32, 32)),
     r"input_ids is None"),
    (lambda m: m(input_ids=torch.ones(1, 3)), r"input_ids must hold integer ids .*got dtype torch.float32"),
    (lambda m: m(input_ids=[[1, 2]]), r"input_ids must be a torch tensor"),
    (lambda m: m(input_ids=torch.ones(1, 3, dtype=torch.long), token_type_ids=torch.full((1, 3), 2)),
     r"token_type_ids must lie in 0..1, got values in 2..2"),
    (lambda m: m(input_ids=torch.ones(1, 3, dtype=torch.long), token_type_ids=torch.full((1, 3), -1)),
     r"token_type_ids must lie in 0..1, got values in -1..-1"),
    (lambda m: m(input_ids=torch.ones(1, 3, dtype=torch.long), token_type_ids=torch.zeros(1, 2, dtype=torch.long)),
     r"token_type_ids shape \(1, 2\) does not match input_ids \(1, 3\)"),
    (lambda m: m(input_ids=torch.ones(1, 3, dtype=torch.long), token_type_ids=torch.zeros(1, 3)),
     r"token_type_ids must hold integer ids"),
    # images: a PIL image or a numpy array instead of pixel_values, raw uint8 pixels, a NaN pixel
    (lambda m: m.get_image_features(pixel_values=__import__("PIL.Image").Image.new("RGB", (32, 32))),
     r"pixel_values must be a torch tensor .*got Image: turn images into pixel_values with the CommerceMMProcessor"),
    (lambda m: m.get_item_features(pixel_values=torch.zeros(1, 3, 32, 32).numpy()), r"got ndarray"),
    (lambda m: m.get_image_features(pixel_values=torch.zeros(1, 3, 32, 32, dtype=torch.uint8)),
     r"pixel_values must be floating point .*got dtype torch.uint8"),
    (lambda m: m.get_multimodal_features(input_ids=torch.ones(2, 3, dtype=torch.long), pixel_values=torch.zeros(
        2, 3, 32, 32).index_fill_(0, torch.tensor([1]), math.nan)),
     r"pixel_values of images \[1\] hold NaN or infinite values"),
    (lambda m: m.get_image_features(pixel_values=torch.zeros(1, 1, 32, 32)), r"pixel_values must be \(batch, 3"),
])
def test_model_input_edges_are_named(model, call, message):
    with pytest.raises(ValueError, match=message):
        with torch.no_grad():
            call(model)


def test_valid_token_type_ids_still_work(model):
    input_ids = torch.tensor([[2, 5, 6, 3]])
    with torch.no_grad():
        plain = model.get_text_features(input_ids=input_ids).pooler_output
        zeros = model.get_text_features(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids)).pooler_output
        ones = model.get_text_features(input_ids=input_ids, token_type_ids=torch.ones_like(input_ids)).pooler_output
    torch.testing.assert_close(plain, zeros)
    assert not torch.allclose(plain, ones)


def test_a_pretraining_model_loads_from_a_base_model_folder(tmp_path):
    """The MLM decoder is tied to the word embeddings: present through the tie, it is no sign that the MLM head was
    in the checkpoint, so a base-model folder loads into the pretraining model with fresh heads."""
    from helpers import tiny_config

    from commercemm_hf import CommerceMMForPreTraining, CommerceMMModel

    base = CommerceMMModel(tiny_config())
    base.save_pretrained(tmp_path)
    model = CommerceMMForPreTraining.from_pretrained(tmp_path)
    torch.testing.assert_close(model.commercemm.text_projection.weight, base.text_projection.weight)
