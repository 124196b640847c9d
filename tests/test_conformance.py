"""The model against transformers' contract: config flags, `return_dict`, per-stack attention, every attention
backend on padded batches, saving, the processors' kwargs, re-saved remote-code folders and transformers' own
pipelines. (torch.export / torch.compile: `test_conformance_export.py`; the vendored common suite: `tests/common/`.)"""

import inspect
import json

import numpy as np
import pytest
import torch
from helpers import random_image, run_without_package, tiny_config
from PIL import Image
from safetensors import safe_open
from transformers import AutoModel, PreTrainedTokenizerFast, pipeline
from transformers.modeling_flash_attention_utils import _get_unpad_data
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import ProcessorMixin

from commercemm_hf import (
    CommerceMMForPreTraining,
    CommerceMMForProductCategorization,
    CommerceMMForRetrieval,
    CommerceMMImageProcessor,
    CommerceMMModel,
    CommerceMMProcessor,
)


def padded_batch(vocab_size: int = 300, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (3, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    attention_mask[2, 2:] = 0
    input_ids[attention_mask == 0] = 0
    pixel_values = torch.randn(3, 3, 32, 32, generator=generator)
    return input_ids, attention_mask, pixel_values


def feature_calls(model, input_ids, attention_mask, pixel_values, **kwargs):
    return {
        "text": model.get_text_features(input_ids=input_ids, attention_mask=attention_mask, **kwargs),
        "image": model.get_image_features(pixel_values=pixel_values, **kwargs),
        "multimodal": model.get_multimodal_features(
            input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, **kwargs
        ),
    }


# ---------------------------------------------------------------------------------------------- 1. config flags


def test_config_output_flags_are_the_defaults_of_every_call():
    config = tiny_config(attn_implementation="eager")
    config.output_hidden_states = True
    config.output_attentions = True
    model = CommerceMMModel(config).eval()
    input_ids, attention_mask, pixel_values = padded_batch()
    layers = config.text_config.num_hidden_layers
    for name, outputs in feature_calls(model, input_ids, attention_mask, pixel_values).items():
        assert outputs.hidden_states is not None and len(outputs.hidden_states) == layers + 1, name
        assert outputs.attentions is not None and len(outputs.attentions) == layers, name
    forward = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
    assert forward.text_model_output.hidden_states is not None and forward.multimodal_model_output.attentions
    quiet = model.get_text_features(input_ids=input_ids, output_hidden_states=False, output_attentions=False)
    assert quiet.hidden_states is None and quiet.attentions is None  # an explicit False still wins


# ---------------------------------------------------------------------------------------------- 2. return_dict


def test_feature_functions_and_heads_honour_return_dict(model):
    input_ids, attention_mask, pixel_values = padded_batch()
    with_dict = feature_calls(model, input_ids, attention_mask, pixel_values)
    as_tuples = feature_calls(model, input_ids, attention_mask, pixel_values, return_dict=False)
    for name in with_dict:
        assert isinstance(as_tuples[name], tuple), name
        torch.testing.assert_close(as_tuples[name][1], with_dict[name].pooler_output)
    config = tiny_config(id2label={0: "a", 1: "b"}, return_dict=False)
    head = CommerceMMForProductCategorization(config).eval()
    assert isinstance(head(input_ids=input_ids, attention_mask=attention_mask), tuple)
    assert isinstance(head.commercemm.get_text_features(input_ids=input_ids), tuple)  # config.return_dict too
    retrieval = CommerceMMForRetrieval(tiny_config(retrieval_target="image")).eval()
    out = retrieval(source_input_ids=input_ids, pixel_values=pixel_values, return_dict=False)
    assert isinstance(out, tuple) and out[1].shape == (3, 3)


# ---------------------------------------------------------------------------------------------- 3. attention choice


def stack_implementations(model) -> dict[str, str]:
    return {
        name: getattr(model, f"{name}_model").encoder.layers[0].self_attn.config._attn_implementation
        for name in ("text", "vision", "multimodal")
    }


def test_a_per_stack_attention_choice_is_kept(tmp_path):
    model = CommerceMMModel(tiny_config(attn_implementation={"text_config": "eager"}))
    assert stack_implementations(model) == {"text": "eager", "vision": "sdpa", "multimodal": "sdpa"}
    model.save_pretrained(tmp_path)
    loaded = CommerceMMModel.from_pretrained(tmp_path, attn_implementation={"multimodal_config": "eager"})
    assert stack_implementations(loaded) == {"text": "sdpa", "vision": "sdpa", "multimodal": "eager"}
    loaded.set_attn_implementation({"vision_config": "eager"})
    assert stack_implementations(loaded) == {"text": "sdpa", "vision": "eager", "multimodal": "eager"}


def test_a_rejected_attention_choice_changes_nothing(model):
    before = stack_implementations(model), model.config._attn_implementation
    with pytest.raises(ValueError, match="foo"):
        model.set_attn_implementation("foo")
    with pytest.raises(ValueError, match="foo"):
        model.set_attn_implementation({"text_config": "foo"})
    assert (stack_implementations(model), model.config._attn_implementation) == before


# ---------------------------------------------------------------------------------------------- 6. backends


def test_eager_sdpa_and_flex_give_the_same_embeddings_on_padded_batches():
    """Flex attention on CPU compiles its kernels (tens of seconds): one multimodal call covers all three stacks."""
    torch.manual_seed(0)
    model = CommerceMMModel(tiny_config()).eval()
    input_ids, attention_mask, pixel_values = padded_batch()
    results = {}
    for implementation in ("eager", "sdpa", "flex_attention"):
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            text = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
            fused = model.get_multimodal_features(
                input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask
            ).pooler_output
        results[implementation] = (text, fused)
    for implementation in ("sdpa", "flex_attention"):
        for expected, actual in zip(results["eager"], results[implementation]):
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    # and the padding is really masked: a padded row equals the same row alone, unpadded
    model.set_attn_implementation("sdpa")
    alone = model.get_text_features(input_ids=input_ids[2:3, :2]).pooler_output
    torch.testing.assert_close(results["eager"][0][2:3], alone, atol=1e-5, rtol=0)


def test_the_flash_path_gets_the_padding_mask_that_transformers_unpads(model, monkeypatch):
    """No GPU here: stand in for flash-attention with a function that does what transformers' flash path does with
    the mask it is handed (`_get_unpad_data`: keep the tokens the 2-d mask marks, attend within each sequence)."""
    input_ids, attention_mask, pixel_values = padded_batch()
    handed = []

    def unpadded_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        assert attention_mask is None or attention_mask.dim() == 2, "flash reads a (batch, length) padding mask"
        handed.append(attention_mask)
        output = torch.zeros_like(query.transpose(1, 2))
        if attention_mask is None:
            attention_mask = torch.ones(query.shape[0], query.shape[2], dtype=torch.bool)
        indices, cu_seqlens, _ = _get_unpad_data(attention_mask)
        for row in range(query.shape[0]):
            keep = indices[cu_seqlens[row]:cu_seqlens[row + 1]] - row * query.shape[2]
            attended = torch.nn.functional.scaled_dot_product_attention(
                query[row:row + 1, :, keep], key[row:row + 1, :, keep], value[row:row + 1, :, keep], scale=scaling
            )
            output[row, keep] = attended[0].transpose(0, 1)
        return output, None

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "flash_attention_2", unpadded_attention)
    expected = feature_calls(model, input_ids, attention_mask, pixel_values)
    configs = [model.config] + [getattr(model.config, key) for key in model.config.sub_configs]
    previous = [config._attn_implementation_internal for config in configs]
    try:
        for config in configs:  # set_attn_implementation would look for the flash-attn package
            config._attn_implementation_internal = "flash_attention_2"
        actual = feature_calls(model, input_ids, attention_mask, pixel_values)
    finally:
        for config, implementation in zip(configs, previous):
            config._attn_implementation_internal = implementation
    for name in expected:
        torch.testing.assert_close(actual[name].pooler_output, expected[name].pooler_output, atol=1e-5, rtol=0)
    text_masks = [mask for mask in handed if mask is not None and mask.shape == attention_mask.shape]
    assert text_masks and all(torch.equal(mask, attention_mask.bool()) for mask in text_masks)
    multimodal_length = 1 + (1 + model.config.vision_config.num_patches) + input_ids.shape[1]  # [CLS_mm], image, text
    assert any(mask is not None and tuple(mask.shape) == (3, multimodal_length) for mask in handed), [
        None if mask is None else tuple(mask.shape) for mask in handed]


# ---------------------------------------------------------------------------------------------- 4. saving


def test_an_untied_mlm_decoder_is_saved_and_a_tied_one_is_not(tmp_path):
    for tied in (False, True):
        model = CommerceMMForPreTraining(tiny_config(tie_word_embeddings=tied))
        folder = tmp_path / str(tied)
        model.save_pretrained(folder)
        with safe_open(folder / "model.safetensors", "pt") as weights:
            assert ("mlm_head.decoder.weight" in weights.keys()) is not tied
        loaded = CommerceMMForPreTraining.from_pretrained(folder)
        torch.testing.assert_close(loaded.mlm_head.decoder.weight, model.mlm_head.decoder.weight, atol=0, rtol=0)
        word_embeddings = loaded.commercemm.text_model.embeddings.word_embeddings.weight
        assert (loaded.mlm_head.decoder.weight is word_embeddings) is tied


# ---------------------------------------------------------------------------------------------- 7. main input


@pytest.mark.parametrize("model_class", [CommerceMMModel, CommerceMMForProductCategorization, CommerceMMForRetrieval,
                                         CommerceMMForPreTraining])
def test_main_input_name_is_the_first_forward_argument(model_class):
    first = list(inspect.signature(model_class.forward).parameters)[1]
    assert model_class.main_input_name == first


# ---------------------------------------------------------------------------------------------- 8. processor kwargs


def test_processor_defaults_rank_below_the_saved_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    fixed = PreTrainedTokenizerFast.from_pretrained(tmp_path, padding="max_length", max_length=17)
    fixed.save_pretrained(tmp_path / "fixed")
    reloaded = PreTrainedTokenizerFast.from_pretrained(tmp_path / "fixed")
    processor = CommerceMMProcessor(CommerceMMImageProcessor(), reloaded)
    assert processor(text=["red mug", "a"])["input_ids"].shape == (2, 17)
    assert processor(text=["red mug", "a"], padding="longest")["input_ids"].shape[1] < 17  # the call wins


def test_processor_rejects_a_kwarg_given_twice(processor):
    with pytest.raises(ValueError, match="max_length was passed two times"):
        processor(text="red mug", max_length=4, text_kwargs={"max_length": 6})
    with pytest.raises(ValueError, match="do_normalize was passed two times"):
        processor(images=random_image(0), do_normalize=False, images_kwargs={"do_normalize": True})


def test_processor_call_has_no_hidden_defaults():
    parameters = inspect.signature(CommerceMMProcessor.__call__).parameters
    assert [name for name, p in parameters.items() if p.default is not inspect.Parameter.empty] == ["images", "text"]
    assert issubclass(CommerceMMProcessor, ProcessorMixin)


# ---------------------------------------------------------------------------------------------- 9. image processor


def test_do_convert_rgb_false_keeps_each_images_channels(processor):
    image_processor = processor.image_processor
    rgb = random_image(1)
    torch.testing.assert_close(image_processor(rgb, do_convert_rgb=False)["pixel_values"],
                               image_processor(rgb)["pixel_values"])
    plain = dict(do_convert_rgb=False, do_normalize=False, do_rescale=False)
    rgba = np.random.default_rng(2).integers(0, 256, (32, 32, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully "transparent": kept as data, not composited onto white
    kept = image_processor(Image.fromarray(rgba, "RGBA"), **plain)["pixel_values"]
    assert kept.shape == (1, 4, 32, 32)
    torch.testing.assert_close(kept[0], torch.from_numpy(rgba).permute(2, 0, 1).float())
    torch.testing.assert_close(image_processor(rgba, **plain)["pixel_values"], kept)  # the array the same
    gray = image_processor(random_image(3, mode="L"), do_convert_rgb=False, image_mean=[0.5], image_std=[0.5])
    assert gray["pixel_values"].shape == (1, 1, 32, 32)
    assert image_processor(random_image(3, mode="L"))["pixel_values"].shape == (1, 3, 32, 32)  # converted by default
    with pytest.raises(ValueError, match=r"image_mean must be one value or 4 .* got \[0.48"):
        image_processor(rgba, do_convert_rgb=False)  # CLIP's 3 means for 4 channels
    with pytest.raises(ValueError, match=r"different channel counts \[1, 3\]"):
        image_processor([random_image(4), random_image(5, mode="L")], do_convert_rgb=False, image_mean=0.5,
                        image_std=0.5)
    with pytest.raises(ValueError, match="image 0: a P image has no 8-bit channels to keep"):
        image_processor(random_image(6, mode="P"), do_convert_rgb=False)


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_mean=[0.5] * 4, image_std=[0.5] * 4),
     r"image_mean must be one value or 3 .* got \[0.5, 0.5, 0.5, 0.5\]"),
    (dict(image_std=[0.5, 0.0, 0.5]), "image_std must be positive"),
])
def test_bad_mean_or_std_is_a_clear_error(processor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        processor.image_processor(random_image(4), **kwargs)


# ---------------------------------------------------------------------------------------------- 10-11. folders


def test_a_re_saved_folder_keeps_its_pipeline_code(tiny_hub_folder, tmp_path):
    config = json.loads((tiny_hub_folder / "config.json").read_text())
    named = {entry["impl"].split(".")[0] + ".py" for entry in config["custom_pipelines"].values()}
    code = named | {"pipeline_commercemm_inputs.py"}  # what the pipeline files import
    assert code <= {path.name for path in tiny_hub_folder.glob("*.py")}
    AutoModel.from_pretrained(tiny_hub_folder).save_pretrained(tmp_path / "in_package")
    assert code <= {path.name for path in (tmp_path / "in_package").glob("*.py")}
    result = run_without_package(f"""
import json, os
from transformers import AutoModel, AutoProcessor, pipeline
model = AutoModel.from_pretrained({str(tiny_hub_folder)!r}, trust_remote_code=True)
model.save_pretrained("resaved")
AutoProcessor.from_pretrained({str(tiny_hub_folder)!r}, trust_remote_code=True).save_pretrained("resaved")
search = pipeline("product-search", model="resaved", trust_remote_code=True)
print(json.dumps({{"files": sorted(name for name in os.listdir("resaved") if name.endswith(".py")),
                  "pipeline": type(search).__name__}}))
""", tmp_path)
    assert code <= set(result["files"]) and result["pipeline"] == "CommerceMMProductSearchPipeline"


def test_image_feature_extraction_pipeline_with_pool(tiny_hub_folder, model):
    extractor = pipeline("image-feature-extraction", model=str(tiny_hub_folder))
    image = random_image(5, size=(32, 32))
    pooled = extractor(image, pool=True, return_tensors=True)
    loaded = AutoModel.from_pretrained(tiny_hub_folder).eval()
    pixel_values = extractor.image_processor(image)["pixel_values"]
    expected = torch.nn.functional.normalize(loaded.get_image_features(pixel_values=pixel_values).pooler_output, dim=-1)
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=0)
    outputs = loaded(pixel_values=pixel_values)
    assert outputs.pooler_output is outputs.image_embeds
    input_ids, attention_mask, pixel_values = padded_batch()
    both = loaded(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
    assert both.pooler_output is both.multimodal_embeds
    assert loaded(input_ids=input_ids, pixel_values=pixel_values[:2]).pooler_output is None  # unpaired
    json.dumps(extractor(image, pool=True))  # plain lists by default
