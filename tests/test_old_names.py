"""Names from before the multimodal stack got one name ("fusion" -> "multimodal") still load: a folder saved the old
way (config.json with `fusion_depth` / `fusion_depth_choices` and the old sub-config model_type, safetensors with
`fusion_model.*`, `image_to_fusion`, `text_to_fusion` keys), with and without the package; old state dict keys
through `load_state_dict` (Trainer's resume); the `fusion_depth=` keyword with a FutureWarning; the old config class
name. Every save writes the new names."""

import json

import pytest
import torch
from helpers import random_image, run_without_package, save_tiny_hub_folder
from safetensors.torch import load_file, save_file

from commercemm_hf import (
    CommerceMMConfig,
    CommerceMMForPreTraining,
    CommerceMMForProductCategorization,
    CommerceMMFusionConfig,
    CommerceMMModel,
    CommerceMMMultimodalConfig,
)
from commercemm_hf.pipelines.pipeline_commercemm_inputs import split_depths


OLD_WEIGHT_NAMES = (("multimodal_model.", "fusion_model."), ("image_to_multimodal.", "image_to_fusion."),
                    ("text_to_multimodal.", "text_to_fusion."))


def old_key(key: str) -> str:
    for new, old in OLD_WEIGHT_NAMES:
        key = key.replace(new, old)
    return key


def write_old_folder(folder, multimodal_depth=1):
    """Rewrite a folder saved by `save_pretrained` into the layout of the code before the rename."""
    config = json.loads((folder / "config.json").read_text())
    config.pop("multimodal_depth")
    if multimodal_depth is not None:
        config["fusion_depth"] = multimodal_depth
    config["fusion_depth_choices"] = config.pop("multimodal_depth_choices")
    config["multimodal_config"]["model_type"] = "commercemm_fusion_model"
    (folder / "config.json").write_text(json.dumps(config))
    weights = load_file(folder / "model.safetensors")
    old = {old_key(key): value for key, value in weights.items()}
    assert sum("fusion" in key for key in old) >= 20  # the rewrite did rename the multimodal stack's weights
    save_file(old, folder / "model.safetensors", metadata={"format": "pt"})
    return old


def new_names_only(folder):
    keys = load_file(folder / "model.safetensors").keys()
    config = json.loads((folder / "config.json").read_text())
    return (not [key for key in keys if "fusion" in key] and any(key.startswith("multimodal_model.") for key in keys)
            and "fusion_depth" not in config and "fusion_depth_choices" not in config
            and config["multimodal_config"]["model_type"] == "commercemm_multimodal_model")


def test_a_fresh_save_writes_the_new_names(saved_tiny_model):
    _, folder = saved_tiny_model
    assert new_names_only(folder)


def test_an_old_folder_loads_into_the_new_names_and_resaves_with_them(saved_tiny_model, tmp_path):
    model, folder = saved_tiny_model
    write_old_folder(folder, multimodal_depth=1)
    loaded, info = CommerceMMModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    config = loaded.config
    assert config.multimodal_depth == 1 and config.multimodal_depth_choices == model.config.multimodal_depth_choices
    assert config.multimodal_config.model_type == "commercemm_multimodal_model"
    assert not hasattr(config, "fusion_depth") and not hasattr(config, "fusion_depth_choices")
    for (name, value), (loaded_name, loaded_value) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == loaded_name and torch.equal(value, loaded_value), name
    ids, pixels = torch.tensor([[2, 9, 8, 3]]), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model.get_multimodal_features(input_ids=ids, pixel_values=pixels, multimodal_depth=1).pooler_output
        got = loaded.eval().get_multimodal_features(input_ids=ids, pixel_values=pixels).pooler_output  # config: 1
    assert torch.allclose(got, expected, atol=1e-6)
    loaded.save_pretrained(tmp_path / "resaved")
    assert new_names_only(tmp_path / "resaved")
    # a head class starts from the old base folder too
    _, info = CommerceMMForPreTraining.from_pretrained(folder, output_loading_info=True)
    assert not [key for key in info["missing_keys"] if key.startswith("commercemm.")]


def test_old_keys_load_through_load_state_dict(saved_tiny_model):
    model, folder = saved_tiny_model
    old = write_old_folder(folder)
    fresh = CommerceMMModel(model.config)
    assert not fresh.load_state_dict(old, strict=True).missing_keys
    new_weight = fresh.multimodal_model.image_to_multimodal.weight
    assert torch.equal(new_weight, model.multimodal_model.image_to_multimodal.weight)
    # a head's Trainer checkpoint (prefixed keys) saved the old way
    head = CommerceMMForProductCategorization(CommerceMMConfig.from_dict({**model.config.to_dict(), "num_labels": 3}))
    prefixed = {f"commercemm.{key}": value for key, value in old.items()}
    prefixed.update({key: value for key, value in head.state_dict().items() if not key.startswith("commercemm.")})
    assert not head.load_state_dict(prefixed, strict=True).missing_keys
    assert torch.equal(head.commercemm.multimodal_model.cls_token, model.multimodal_model.cls_token)


OLD_FOLDER_WITHOUT_PACKAGE = """
import json, torch
from safetensors.torch import load_file
from transformers import AutoModel
inputs = load_file("inputs.safetensors")
model, info = AutoModel.from_pretrained("model", trust_remote_code=True, output_loading_info=True)
with torch.no_grad():
    got = model.eval().get_multimodal_features(input_ids=inputs["input_ids"],
                                               pixel_values=inputs["pixel_values"]).pooler_output
model.save_pretrained("resaved")
print(json.dumps({"module": type(model).__module__, "problems": sorted(k for v in info.values() for k in v),
                  "depth": model.config.multimodal_depth, "diff": float((got - inputs["expected"]).abs().max())}))
"""


def test_an_old_folder_loads_without_the_package(saved_tiny_model):
    model, folder = saved_tiny_model
    write_old_folder(folder, multimodal_depth=1)
    ids, pixels = torch.tensor([[2, 9, 8, 3]]), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model.get_multimodal_features(input_ids=ids, pixel_values=pixels, multimodal_depth=1).pooler_output
    save_file({"input_ids": ids, "pixel_values": pixels, "expected": expected}, folder.parent / "inputs.safetensors")
    result = run_without_package(OLD_FOLDER_WITHOUT_PACKAGE, folder.parent)
    assert result["module"].startswith("transformers_modules") and result["problems"] == []
    assert result["depth"] == 1 and result["diff"] < 1e-5
    assert new_names_only(folder.parent / "resaved")


def test_the_fusion_depth_keyword_warns_and_acts_as_multimodal_depth(model):
    ids, pixels = torch.tensor([[2, 9, 8, 3], [2, 7, 3, 0]]), torch.randn(2, 3, 32, 32)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    inputs = dict(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    with torch.no_grad():
        full = model.get_multimodal_features(**inputs).pooler_output
        expected = model.get_multimodal_features(**inputs, multimodal_depth=1).pooler_output
        assert not torch.allclose(full, expected)  # depth 1 differs from full depth, so the keyword is seen
        calls = {
            "get_multimodal_features": lambda: model.get_multimodal_features(**inputs, fusion_depth=1).pooler_output,
            "get_item_features": lambda: model.get_item_features(**inputs, fusion_depth=1).pooler_output,
            "forward": lambda: model(**inputs, fusion_depth=1).multimodal_embeds * expected.norm(dim=-1, keepdim=True),
        }
        for name, call in calls.items():
            with pytest.warns(FutureWarning, match="`fusion_depth` is now called `multimodal_depth`") as caught:
                assert torch.allclose(call(), expected, atol=1e-5), name
            assert caught[0].filename == __file__, (name, caught[0].filename)  # the warning names the caller's line
        with pytest.raises(ValueError, match="multimodal_depth=2 and its old name fusion_depth=1"), pytest.warns(
                FutureWarning):
            model.get_item_features(**inputs, multimodal_depth=2, fusion_depth=1)
    with pytest.warns(FutureWarning, match="`fusion_depth` is now called `multimodal_depth`"):
        assert split_depths({"fusion_depth": 1, "batch_size": 2}) == {"multimodal_depth": 1}


def test_the_old_config_names():
    assert CommerceMMFusionConfig is CommerceMMMultimodalConfig
    config = CommerceMMConfig.from_preset("tiny", fusion_depth=1, fusion_depth_choices=[1])
    assert (config.multimodal_depth, config.multimodal_depth_choices) == (1, [1])
    assert "fusion_depth" not in config.to_dict() and config.to_dict()["multimodal_depth"] == 1
    with pytest.raises(ValueError, match="multimodal_depth=2 and its old name fusion_depth=1"):
        CommerceMMConfig(multimodal_depth=2, fusion_depth=1)
    # imported backbones are recorded by tower: the image tower is "vision"
    old = CommerceMMConfig.from_dict({"imported_backbones": {"text": "org/bert", "image": "org/vit"}})
    assert old.imported_backbones == {"text": "org/bert", "vision": "org/vit"}


def test_an_old_folder_loads_with_sentence_transformers(processor, tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    folder = save_tiny_hub_folder(processor, tmp_path / "model")
    model = CommerceMMModel.from_pretrained(folder).eval()
    write_old_folder(folder, multimodal_depth=None)
    module_config = folder / "sentence_commercemm_config.json"
    module_config.write_text(json.dumps({"text_depth": None, "image_depth": None, "fusion_depth": 1}))
    encoder = sentence_transformers.SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    assert encoder[0].multimodal_depth == 1
    items = [{"text": "red mug", "image": random_image(0)}, {"text": "blue lamp", "image": random_image(1)}]
    inputs = processor(images=[item["image"] for item in items], text=[item["text"] for item in items],
                       padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.get_multimodal_features(**inputs, multimodal_depth=1).pooler_output
    torch.testing.assert_close(encoder.encode(items, convert_to_tensor=True),
                               torch.nn.functional.normalize(expected, dim=-1), atol=1e-5, rtol=0)
