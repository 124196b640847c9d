"""CommerceMMImageProcessor / CommerceMMProcessor / train_commercemm_tokenizer on every kind of input."""

import io

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import CLIPImageProcessorPil

from commercemm_hf import CommerceMMImageProcessor, CommerceMMProcessor, train_commercemm_tokenizer
from commercemm_hf.processing import to_rgb_image


SIZE = dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def raw():
    """Pixel values in [0, 1] (no mean/std), to compare pictures directly."""
    return CommerceMMImageProcessor(do_normalize=False, **SIZE)


def gradient(size=(64, 48)) -> Image.Image:
    x = np.linspace(0, 255, size[0])[None, :, None]
    y = np.linspace(0, 255, size[1])[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (size[1], size[0], 1)), np.broadcast_to(y, (size[1], size[0], 1)),
                          np.full((size[1], size[0], 1), 128.0)], axis=2)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "1", "P", "CMYK", "YCbCr", "HSV", "I;16", "I;16B", "I", "F", "PA"])
def test_every_pil_mode(raw, mode):
    image = gradient()
    if mode == "PA":
        image = image.convert("P").convert("PA")
    elif mode in ("I;16", "I;16B"):
        image = Image.fromarray((np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(">u2" if mode == "I;16B" else "<u2"))
        assert image.mode == mode
    else:
        image = image.convert(mode)
    pixels = raw(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32) and pixels.dtype == torch.float32
    assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0 and not torch.isnan(pixels).any()


def test_sixteen_bit_is_scaled_not_clipped(raw):
    gray = gradient().convert("L")
    sixteen = Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257)
    assert sixteen.mode == "I;16"
    torch.testing.assert_close(raw(sixteen, return_tensors="pt")["pixel_values"],
                               raw(gray.convert("RGB"), return_tensors="pt")["pixel_values"], atol=1 / 255, rtol=0)


def test_transparency_is_composited_on_white(raw):
    transparent = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    pixels = raw(transparent, return_tensors="pt")["pixel_values"]
    assert torch.allclose(pixels, torch.ones_like(pixels))
    half = Image.new("RGBA", (40, 40), (0, 0, 0, 128))
    value = raw(half, return_tensors="pt")["pixel_values"].mean().item()
    assert 0.45 < value < 0.55
    palette = Image.new("P", (40, 40), 0)
    palette.info["transparency"] = 0
    assert to_rgb_image(palette).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(raw):
    image = Image.new("RGB", (60, 30), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 30, 30))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    shown = to_rgb_image(Image.open(io.BytesIO(buffer.getvalue())))
    assert shown.size == (30, 60)
    top, bottom = np.asarray(shown)[:20].mean(), np.asarray(shown)[-20:].mean()
    assert top > 200 and bottom < 50  # the white half is now on top


@pytest.mark.parametrize("size", [(1, 1), (1, 4000), (4000, 1), (4000, 3000), (3, 2)])
def test_any_size(raw, size):
    pixels = raw(Image.new("RGB", size, (10, 200, 30)), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    torch.testing.assert_close(pixels[0, :, 16, 16], torch.tensor([10, 200, 30]) / 255.0)


def test_matches_clip_image_processor_on_ordinary_images(raw):
    clip = CLIPImageProcessorPil(do_normalize=False, **SIZE)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(48, 64), (90, 33), (32, 32)]]
    ours = raw(images, return_tensors="pt")["pixel_values"]
    theirs = clip(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs, atol=1 / 255, rtol=0)
    normalized = CommerceMMImageProcessor(**SIZE)(images, return_tensors="pt")["pixel_values"]
    clip_normalized = CLIPImageProcessorPil(**SIZE)(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(normalized, clip_normalized, atol=1e-4, rtol=1e-4)


def test_numpy_torch_and_path_inputs(raw, tmp_path):
    image = gradient()
    array = np.asarray(image)
    reference = raw(image, return_tensors="pt")["pixel_values"]
    for item in (array, array.transpose(2, 0, 1), array / 255.0, torch.from_numpy(array.transpose(2, 0, 1).copy()),
                 (array.astype(np.uint16) * 257)):
        torch.testing.assert_close(raw(item, return_tensors="pt")["pixel_values"], reference, atol=1 / 255, rtol=0)
    image.save(tmp_path / "image.png")
    torch.testing.assert_close(raw(str(tmp_path / "image.png"), return_tensors="pt")["pixel_values"], reference)
    torch.testing.assert_close(raw(tmp_path / "image.png", return_tensors="pt")["pixel_values"], reference)


def test_fast_jpeg_decode_is_close(tmp_path):
    path = tmp_path / "big.jpg"
    gradient((1280, 960)).save(path, quality=95)
    exact = CommerceMMImageProcessor(do_normalize=False, **SIZE)(str(path), return_tensors="pt")["pixel_values"]
    fast = CommerceMMImageProcessor(do_normalize=False, fast_jpeg_decode=True, **SIZE)(str(path), return_tensors="pt")
    assert (fast["pixel_values"] - exact).abs().mean() < 0.02


@pytest.mark.parametrize("bad, message", [
    ([], "list is empty"),
    (42, "unsupported type int"),
    (np.zeros((6, 6, 2), dtype=np.uint8), "must be"),
    (np.full((4, 4, 3), np.nan), "NaN"),
    (np.full((4, 4, 3), 3.0), "must lie in \\[0, 1\\]"),
    (np.zeros((0, 4, 3), dtype=np.uint8), "empty"),
    (np.zeros((4, 4, 3), dtype=np.int64), "dtype"),
])
def test_bad_images_raise_naming_the_problem(raw, bad, message):
    with pytest.raises(ValueError, match=message):
        raw(bad, return_tensors="pt")


def test_corrupt_and_missing_files_are_named(raw, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(ValueError, match="image 1: cannot read the image file .*corrupt.jpg"):
        raw([gradient(), str(corrupt)], return_tensors="pt")
    truncated = tmp_path / "truncated.png"
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ValueError, match="truncated.png"):
        raw(str(truncated), return_tensors="pt")
    with pytest.raises(ValueError, match="no image file at"):
        raw(str(tmp_path / "missing.png"), return_tensors="pt")


MODES = st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "CMYK", "1", "I", "F", "I;16"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(1, 300), height=st.integers(1, 300), mode=MODES, seed=st.integers(0, 2**16))
def test_property_any_mode_any_size(raw, width, height, mode, seed):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    image = image.convert("L").convert(mode) if mode in ("I", "F", "I;16") else image.convert(mode)
    pixels = raw(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32) and torch.isfinite(pixels).all()
    assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0


# ------------------------------------------------------------------------------------------- tokenizer, processor


MULTILINGUAL = ["red ceramic mug", "taza roja de cerámica", "roter Keramikbecher", "tasse rouge en céramique",
                "红色陶瓷杯", "赤いマグカップ", "кружка красная", "mug 😀 emoji", "ÉCHARPE Élégante"] * 5


@pytest.mark.parametrize("algorithm", ["wordpiece", "bpe"])
def test_tokenizer_training(algorithm, tmp_path):
    tokenizer = train_commercemm_tokenizer(MULTILINGUAL, vocab_size=300, algorithm=algorithm, model_max_length=24)
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id] == [0, 1]
    assert {tokenizer.cls_token, tokenizer.sep_token, tokenizer.mask_token} == {"[CLS]", "[SEP]", "[MASK]"}
    ids = tokenizer("红色 mug 😀")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    if algorithm == "bpe":
        assert tokenizer.unk_token_id not in ids  # byte-level: nothing is unknown
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="algorithm"):
        train_commercemm_tokenizer(MULTILINGUAL, algorithm="unigram")
    with pytest.raises(ValueError, match="no tokens"):
        train_commercemm_tokenizer(["", ""], vocab_size=100)


def test_processor_text_image_and_both(processor):
    images = [gradient(), gradient((20, 90))]
    both = processor(images=images, text=["red mug", "blue lamp with a very long name"], return_tensors="pt")
    assert set(both) == {"pixel_values", "input_ids", "attention_mask"}
    assert both["pixel_values"].shape == (2, 3, 32, 32) and both["input_ids"].shape[0] == 2
    assert set(processor(text="only text", return_tensors="pt")) == {"input_ids", "attention_mask"}
    assert set(processor(images=gradient(), return_tensors="pt")) == {"pixel_values"}
    unpaired = processor(images=images[:1], text=["a", "b", "c"], return_tensors="pt")
    assert unpaired["pixel_values"].shape[0] == 1 and unpaired["input_ids"].shape[0] == 3


def test_processor_truncates_and_handles_empty_text(processor):
    long = processor(text=["mug " * 5000, ""], return_tensors="pt")
    assert long["input_ids"].shape[1] == processor.tokenizer.model_max_length
    empty = long["input_ids"][1][long["attention_mask"][1].bool()].tolist()
    assert empty == [processor.tokenizer.cls_token_id, processor.tokenizer.sep_token_id]


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs images, text, or both"),
    ({"text": ["ok", None]}, r"text items \[1\] are not strings"),
    ({"text": 5}, "text must be a string"),
    ({"text": []}, "text must be a string or a non-empty list"),
])
def test_processor_errors(processor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        processor(**kwargs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(max_size=400), min_size=1, max_size=4))
def test_property_any_unicode_text(processor, texts):
    batch = processor(text=texts, return_tensors="pt")
    assert batch["input_ids"].shape[0] == len(texts)
    assert batch["input_ids"].shape[1] <= processor.tokenizer.model_max_length
    assert (batch["input_ids"][:, 0] == processor.tokenizer.cls_token_id).all()


def test_processor_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    reloaded = CommerceMMProcessor.from_pretrained(tmp_path)
    assert type(reloaded.image_processor) is CommerceMMImageProcessor
    inputs = dict(images=[gradient()], text=["taza roja 😀"], return_tensors="pt")
    first, second = processor(**inputs), reloaded(**inputs)
    for key in first:
        assert torch.equal(first[key], second[key]), key
