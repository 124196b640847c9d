"""`CommerceMMEncoder.encode`: sentence-transformers' shape over texts, images (PIL, numpy, paths) and products."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_image
from torch.nn import functional as F

from commercemm_hf import CommerceMMEncoder


def reference(tiny_encoder, kind, text=None, image=None):
    """The model's own `get_*_features`, normalised, for one item."""
    model, processor = tiny_encoder.model, tiny_encoder.processor
    inputs = processor(images=image, text=text, return_tensors="pt")
    inputs.pop("token_type_ids", None)
    with torch.no_grad():
        if kind == "text":
            out = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        elif kind == "image":
            out = model.get_image_features(pixel_values=inputs["pixel_values"])
        else:
            out = model.get_multimodal_features(**inputs)
    return F.normalize(out.pooler_output, dim=-1)[0].numpy()


def test_a_mixed_list_gets_each_items_own_embedding(tiny_encoder):
    image, other = random_image(1), random_image(2)
    items = ["red ceramic mug", image, {"image": other, "text": "green leather backpack"}, {"text": "lamp"}]
    embeddings = tiny_encoder.encode(items, batch_size=3)
    assert isinstance(embeddings, np.ndarray) and embeddings.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    expected = [reference(tiny_encoder, "text", text="red ceramic mug"), reference(tiny_encoder, "image", image=image),
                reference(tiny_encoder, "multimodal", text="green leather backpack", image=other),
                reference(tiny_encoder, "text", text="lamp")]
    np.testing.assert_allclose(embeddings, np.stack(expected), atol=1e-5)
    # batching does not change the result; a single input gives one vector
    np.testing.assert_allclose(tiny_encoder.encode(items, batch_size=1), embeddings, atol=1e-5)
    np.testing.assert_allclose(tiny_encoder.encode("red ceramic mug"), embeddings[0], atol=1e-5)


def test_images_as_numpy_arrays_and_paths_equal_pil_images(tiny_encoder, tmp_path):
    image = random_image(3)
    image.save(tmp_path / "mug.png")
    from_pil = tiny_encoder.encode([image])
    np.testing.assert_allclose(tiny_encoder.encode([np.asarray(image)]), from_pil, atol=1e-5)
    np.testing.assert_allclose(tiny_encoder.encode([np.asarray(image) / 255.0]), from_pil, atol=1e-5)
    np.testing.assert_allclose(tiny_encoder.encode([Path(tmp_path / "mug.png")]), from_pil, atol=1e-5)
    np.testing.assert_allclose(tiny_encoder.encode([{"image": tmp_path / "mug.png", "text": "mug"}]),
                               tiny_encoder.encode([{"image": image, "text": "mug"}]), atol=1e-5)
    # a bare string is a text, as in sentence-transformers, even when it names a file
    assert not np.allclose(tiny_encoder.encode([str(tmp_path / "mug.png")]), from_pil, atol=1e-3)


def test_options_raw_embeddings_tensors_one_kind_and_depths(tiny_encoder):
    image = random_image(4)
    raw = tiny_encoder.encode([{"image": image, "text": "vase"}], normalize_embeddings=False, convert_to_tensor=True)
    assert torch.is_tensor(raw)
    with torch.no_grad():
        inputs = tiny_encoder.processor(images=image, text="vase", return_tensors="pt")
        inputs.pop("token_type_ids", None)
        expected = tiny_encoder.model.get_multimodal_features(**inputs).pooler_output
    torch.testing.assert_close(raw, expected, atol=1e-5, rtol=1e-5)
    only_text = tiny_encoder.encode([{"image": image, "text": "vase"}], output_value="text")
    np.testing.assert_allclose(only_text[0], reference(tiny_encoder, "text", text="vase"), atol=1e-5)
    shallow = tiny_encoder.encode(["vase"], text_depth=1)
    assert not np.allclose(shallow, tiny_encoder.encode(["vase"]), atol=1e-4)


def test_bad_inputs_name_the_item(tiny_encoder, tmp_path):
    with pytest.raises(ValueError, match=r"items \[1\] have no image embedding"):
        tiny_encoder.encode([random_image(5), "text only"], output_value="image")
    with pytest.raises(ValueError, match=r"item 1: cannot read the image .*missing\.png"):
        tiny_encoder.encode(["mug", Path(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match=r"item 0: a numpy image must be"):
        tiny_encoder.encode([np.zeros((4, 4, 7), dtype=np.uint8)])
    with pytest.raises(ValueError, match="output_value"):
        tiny_encoder.encode(["mug"], output_value="fused")
    with pytest.raises(TypeError, match="unexpected arguments"):
        tiny_encoder.encode(["mug"], normalise=True)


def test_from_a_saved_folder(tiny_encoder, tmp_path):
    tiny_encoder.model.save_pretrained(tmp_path)
    tiny_encoder.processor.save_pretrained(tmp_path)
    loaded = CommerceMMEncoder.from_pretrained(tmp_path)
    items = ["red mug", random_image(6)]
    np.testing.assert_allclose(loaded.encode(items), tiny_encoder.encode(items), atol=1e-5)
