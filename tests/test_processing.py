"""Input processing: CommerceMMImageProcessor, train_commercemm_tokenizer and CommerceMMProcessor.

Images are checked against what they show (colours, orientation, transparency on white) and against transformers'
own `CLIPImageProcessorPil`; texts against the tokenizer's special tokens; the processor against a save/load round
trip. Fast (a few seconds): small images, except the few size tests that need large ones.
"""

import doctest
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CROP, MULTILINGUAL, SMALL, run_without_package
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    CLIPImageProcessorPil,
    PreTrainedTokenizerFast,
)

import commercemm_hf  # noqa: F401  (registers the Auto classes)
from commercemm_hf.processing import (
    SPECIAL_TOKENS,
    CommerceMMImageProcessor,
    CommerceMMProcessor,
    array_to_rgb_image,
    image_processing_commercemm,
    processing_commercemm,
    to_rgb_image,
    tokenization_commercemm,
    train_commercemm_tokenizer,
)


PROCESSING_DIR = Path(image_processing_commercemm.__file__).parent
STEP = 1 / 255 + 1e-6  # one 8-bit level
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def pixels(image_processor, images, **kwargs) -> torch.Tensor:
    return image_processor(images, **kwargs)["pixel_values"]


def quadrants(width=40, height=30) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[: height // 2, : width // 2] = (255, 0, 0)
    array[: height // 2, width // 2:] = (0, 255, 0)
    array[height // 2:, : width // 2] = (0, 0, 255)
    array[height // 2:, width // 2:] = (255, 255, 255)
    return Image.fromarray(array)


def smooth(width=64, height=48, seed=0) -> Image.Image:
    """A smooth colourful picture (resampling keeps it close to itself)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    phases = rng.uniform(0, 2 * np.pi, 3)
    array = np.stack([127.5 + 127.5 * np.sin(3 * x + 2 * y + phase) for phase in phases], axis=-1)
    return Image.fromarray(np.rint(array).astype(np.uint8))


def noise(width, height, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def corner_colours(values: torch.Tensor) -> list[tuple]:
    """The (r, g, b) 0-255 colours near the four corners of a (3, H, W) picture: tl, tr, bl, br."""
    _, height, width = values.shape
    spots = [(2, 2), (2, width - 3), (height - 3, 2), (height - 3, width - 3)]
    return [tuple(int(round(float(v) * 255)) for v in values[:, y, x]) for y, x in spots]


def assert_one_unit_crop(values: torch.Tensor) -> None:
    """One float32 (1, 3, CROP, CROP) picture in [0, 1], as `unnormalized` gives for any single image."""
    assert values.shape == (1, 3, CROP, CROP) and values.dtype == torch.float32 and torch.isfinite(values).all()
    assert 0.0 <= float(values.min()) and float(values.max()) <= 1.0


# ------------------------------------------------------------------------------------------------ PIL modes


def sixteen_bit(gray: Image.Image, mode: str) -> Image.Image:
    values = np.asarray(gray, dtype=np.uint16) * 257
    return Image.fromarray(values.astype(">u2" if mode == "I;16B" else "<u2"))


def in_mode(picture: Image.Image, mode: str) -> Image.Image:
    """`picture` in PIL mode `mode` (wide modes hold its gray levels at their own scale)."""
    gray = picture.convert("L")
    if mode in ("I;16", "I;16B"):
        return sixteen_bit(gray, mode)
    if mode == "I":
        return Image.fromarray(np.asarray(gray, dtype=np.int32) * 257)  # 16-bit data opened as I
    if mode == "F":
        return Image.fromarray(np.asarray(gray, dtype=np.float32) / 255)
    if mode == "PA":
        return picture.convert("P").convert("PA")
    if mode in ("RGBa", "La"):
        return picture.convert("RGBA" if mode == "RGBa" else "LA").convert(mode)
    return picture.convert(mode)


GRAY_MODES = ["L", "LA", "La", "I;16", "I;16B", "I", "F"]
COLOUR_MODES = ["RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA"]


@pytest.mark.parametrize("mode", GRAY_MODES)
def test_gray_modes_give_the_gray_picture(unnormalized, mode):
    picture = smooth()
    converted = in_mode(picture, mode)
    assert converted.mode == mode
    expected = pixels(unnormalized, picture.convert("L").convert("RGB"))
    result = pixels(unnormalized, converted)
    assert_one_unit_crop(result)
    torch.testing.assert_close(result, expected, atol=STEP, rtol=0)


@pytest.mark.parametrize("mode", COLOUR_MODES)
def test_colour_modes_give_the_colour_picture(unnormalized, mode):
    picture = smooth()
    converted = in_mode(picture, mode)
    assert converted.mode == mode
    result, expected = pixels(unnormalized, converted), pixels(unnormalized, picture)
    assert_one_unit_crop(result)
    # palette quantisation and colour-space round trips are lossy; the picture must stay the same picture
    tolerance = {"P": 0.2, "PA": 0.2, "LAB": 0.06}.get(mode, 0.03)
    assert (result - expected).abs().mean() < tolerance / 4 and (result - expected).abs().max() < tolerance * 2


def test_bilevel_mode(unnormalized):
    picture = Image.new("1", (30, 30), 0)
    picture.paste(1, (15, 0, 30, 30))  # right half white
    values = pixels(unnormalized, picture)
    assert_one_unit_crop(values)
    assert corner_colours(values[0]) == [(0, 0, 0), (255, 255, 255), (0, 0, 0), (255, 255, 255)]


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_matches_eight_bit_within_one_level(unnormalized, mode):
    gray = smooth(50, 70).convert("L")
    wide = in_mode(gray, mode)
    assert np.asarray(wide).max() > 255  # really 16-bit values, which `convert("L")` would clip to 255
    eight = pixels(unnormalized, gray)
    torch.testing.assert_close(pixels(unnormalized, wide), eight, atol=STEP, rtol=0)
    array = np.asarray(gray, dtype=np.uint16) * 257  # uint16 numpy arrays follow the same scale
    torch.testing.assert_close(pixels(unnormalized, array), eight, atol=STEP, rtol=0)


def test_wide_modes_use_the_smallest_range_that_holds_them():
    eight_bit_as_i = Image.fromarray(np.array([[0, 128, 255]], dtype=np.int32))
    assert np.asarray(to_rgb_image(eight_bit_as_i))[0, :, 0].tolist() == [0, 128, 255]
    float_in_0_255 = Image.fromarray(np.array([[0.0, 128.0, 255.0]], dtype=np.float32))
    assert np.asarray(to_rgb_image(float_in_0_255))[0, :, 0].tolist() == [0, 128, 255]
    beyond_16_bit = Image.fromarray(np.array([[-100, 0, 200000]], dtype=np.int32))
    assert np.asarray(to_rgb_image(beyond_16_bit))[0, :, 0].tolist() == [0, 0, 255]
    with pytest.raises(ValueError, match="NaN"):
        to_rgb_image(Image.fromarray(np.array([[0.5, np.nan]], dtype=np.float32)))


# ------------------------------------------------------------------------------------------------ transparency


def test_transparency_is_composited_on_white(unnormalized):
    white = torch.ones(1, 3, CROP, CROP)
    transparent_red = Image.new("RGBA", (30, 30), (255, 0, 0, 0))
    torch.testing.assert_close(pixels(unnormalized, transparent_red), white)
    half_black = pixels(unnormalized, Image.new("LA", (30, 30), (0, 128)))
    assert torch.allclose(half_black, torch.full_like(half_black, 127 / 255), atol=STEP)
    half_black_rgba = pixels(unnormalized, Image.new("RGBA", (30, 30), (0, 0, 0, 128)))
    assert torch.allclose(half_black_rgba, torch.full_like(half_black_rgba, 127 / 255), atol=STEP)
    palette = Image.new("P", (30, 30), 3)
    palette.info["transparency"] = 3
    torch.testing.assert_close(pixels(unnormalized, palette), white)
    colour_key = Image.new("RGB", (30, 30), (9, 9, 9))
    colour_key.info["transparency"] = (9, 9, 9)
    torch.testing.assert_close(pixels(unnormalized, colour_key), white)
    rgba_array = np.zeros((30, 30, 4), dtype=np.uint8)
    torch.testing.assert_close(pixels(unnormalized, rgba_array), white)


def test_transparent_files_are_composited_on_white(unnormalized, tmp_path):
    rgba = Image.new("RGBA", (30, 30), (0, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 15, 30))  # opaque blue left half, transparent black right half
    palette = Image.new("P", (30, 30), 0)
    palette.putpalette([0, 0, 0, 0, 0, 255])
    palette.paste(1, (0, 0, 15, 30))
    rgba.save(tmp_path / "rgba.png")
    for name in ("palette.png", "palette.gif"):
        palette.save(tmp_path / name, transparency=0)
    for source in (rgba, tmp_path / "rgba.png", tmp_path / "palette.png", tmp_path / "palette.gif"):
        values = pixels(unnormalized, source)[0]
        assert corner_colours(values)[:2] == [(0, 0, 255), (255, 255, 255)], source


# ------------------------------------------------------------------------------------------------ EXIF orientation


def jpeg_with_orientation(picture: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", exif=exif.tobytes(), quality=98)
    return buffer.getvalue()


# what the stored picture (red tl, green tr, blue bl, white br) shows once turned upright
SHOWN = {
    1: ["red", "green", "blue", "white"],
    3: ["white", "blue", "green", "red"],  # rotated 180 degrees
    6: ["blue", "red", "white", "green"],  # rotated 90 degrees clockwise
    8: ["green", "white", "red", "blue"],  # rotated 90 degrees counter-clockwise
}
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255, 255, 255)}


@pytest.mark.parametrize("orientation", sorted(SHOWN))
@pytest.mark.parametrize("fast_jpeg_decode", [False, True])
def test_exif_orientation_is_applied(tmp_path, orientation, fast_jpeg_decode):
    path = tmp_path / f"photo_{orientation}.jpg"
    path.write_bytes(jpeg_with_orientation(quadrants(400, 300), orientation))
    processor = CommerceMMImageProcessor(
        do_normalize=False, size={"height": 32, "width": 32}, do_center_crop=False, fast_jpeg_decode=fast_jpeg_decode
    )
    for source in (path, str(path), path.read_bytes(), Image.open(path)):
        colours = corner_colours(pixels(processor, source)[0])
        for got, name in zip(colours, SHOWN[orientation]):
            assert max(abs(a - b) for a, b in zip(got, COLOURS[name])) < 40, (source, colours)


def test_exif_orientation_changes_the_shape_before_resizing(unnormalized):
    portrait = Image.open(io.BytesIO(jpeg_with_orientation(quadrants(60, 20), 6)))
    assert to_rgb_image(portrait).size == (20, 60)
    processor = CommerceMMImageProcessor(do_normalize=False, do_center_crop=False, size={"shortest_edge": 10})
    assert pixels(processor, portrait).shape == (1, 3, 30, 10)


# ------------------------------------------------------------------------------------------------ sizes


@pytest.mark.parametrize("size", [(1, 1), (1, 4000), (4000, 1), (4000, 3000), (2, 3), (3, 2)])
def test_any_size_gives_the_crop(unnormalized, size):
    values = pixels(unnormalized, Image.new("RGB", size, (10, 200, 30)))
    assert values.shape == (1, 3, CROP, CROP)
    torch.testing.assert_close(values[0, :, CROP // 2, CROP // 2], torch.tensor([10, 200, 30]) / 255)


def test_very_large_photo_with_default_settings():
    values = pixels(CommerceMMImageProcessor(do_normalize=False), Image.new("RGB", (8000, 6000), (250, 40, 90)))
    assert values.shape == (1, 3, 224, 224)
    assert torch.allclose(values, torch.tensor([250, 40, 90]).view(1, 3, 1, 1) / 255, atol=STEP)


@pytest.mark.parametrize("size, crop, image_size", [
    ({"shortest_edge": 20, "longest_edge": 30}, None, (1, 5000)),
    ({"max_height": 20, "max_width": 20}, None, (5000, 1)),
    ({"height": 20, "width": 10}, None, (1, 1)),
    ({"shortest_edge": 8}, {"height": 20, "width": 20}, (1, 3000)),  # crop larger than the resized image
])
def test_no_side_ever_becomes_zero(size, crop, image_size):
    processor = CommerceMMImageProcessor(do_normalize=False, size=size, do_center_crop=crop is not None,
                                         crop_size=crop or {"height": 1, "width": 1})
    values = processor(Image.new("RGB", image_size, (255, 255, 255)), return_tensors=None)["pixel_values"][0]
    assert min(values.shape) >= 1 and values.max() == 1.0


@pytest.mark.parametrize("width, height", [(640, 480), (480, 640), (97, 31), (224, 224), (300, 2000), (16, 240)])
def test_matches_clip_image_processor(width, height):
    images = [smooth(width, height, seed=1), noise(width, height, seed=2)]
    ours = CommerceMMImageProcessor(do_normalize=False)(images)["pixel_values"]
    theirs = CLIPImageProcessorPil(do_normalize=False)(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs, atol=STEP, rtol=0)


@pytest.mark.parametrize("width, height", [(2, 900), (1500, 3), (20, 700)])
def test_extreme_aspect_ratios_match_clip_on_photos(width, height):
    """Beyond 1:16 only the cropped region is resampled: the same picture as resize-then-crop (PIL may round
    between its two passes in another order, which shows on noise, not on photos)."""
    image = smooth(width, height, seed=3)
    ours = CommerceMMImageProcessor(do_normalize=False, **SMALL)(image)["pixel_values"]
    theirs = CLIPImageProcessorPil(do_normalize=False, **SMALL)(image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs, atol=STEP, rtol=0)


@pytest.mark.parametrize("settings_, crop", [
    (dict(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 24}, resample=2,
          image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.3, 0.4]), (32, 24)),
    (dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), (32, 32)),  # the default mean and std
])
def test_matches_clip_after_mean_and_std(settings_, crop):
    images = [noise(70, 50, seed=3), noise(33, 90, seed=4), noise(32, 32, seed=6)]
    ours = CommerceMMImageProcessor(**settings_)(images)["pixel_values"]
    theirs = CLIPImageProcessorPil(**settings_)(images, return_tensors="pt")["pixel_values"]
    assert ours.shape == (3, 3, *crop)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_crop_larger_than_the_image_pads_black_like_clip():
    settings_ = dict(do_resize=False, crop_size={"height": 20, "width": 20}, do_normalize=False)
    image = noise(7, 12, seed=5)
    ours = CommerceMMImageProcessor(**settings_)(image)["pixel_values"]
    theirs = CLIPImageProcessorPil(**settings_)(image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs)


# ------------------------------------------------------------------------------------------------ other inputs


def test_numpy_torch_file_and_bytes_inputs(unnormalized, tmp_path):
    picture = smooth()
    hwc = np.asarray(picture)
    reference = pixels(unnormalized, picture)
    png = tmp_path / "picture.png"
    picture.save(png)
    arrays = [
        hwc, hwc.transpose(2, 0, 1), hwc / 255.0, (hwc / 255.0).astype(np.float16), np.asfortranarray(hwc),
        hwc.astype(np.uint16) * 257, torch.from_numpy(hwc.transpose(2, 0, 1).copy()),
        torch.from_numpy(hwc / 255.0).permute(2, 0, 1),
        torch.from_numpy(hwc.copy()).permute(2, 0, 1).to(torch.bfloat16) / 255,
    ]
    for index, source in enumerate(arrays):
        tolerance = 2 * STEP if index == len(arrays) - 1 else STEP  # bfloat16 keeps 8 bits of mantissa
        torch.testing.assert_close(pixels(unnormalized, source), reference, atol=tolerance, rtol=0, msg=str(index))
    files = [png, str(png), png.read_bytes(), io.BytesIO(png.read_bytes()), {"bytes": None, "path": str(png)},
             {"bytes": png.read_bytes(), "path": "ignored.png"}]
    for index, source in enumerate(files):  # PNG is lossless: the very same pixels
        torch.testing.assert_close(pixels(unnormalized, source), reference, atol=0, rtol=0, msg=str(index))


def test_gray_and_bool_arrays(unnormalized):
    gray = np.asarray(smooth().convert("L"))
    expected = pixels(unnormalized, Image.fromarray(gray))
    for source in (gray, gray[:, :, None], gray[None], torch.from_numpy(gray.copy())):
        torch.testing.assert_close(pixels(unnormalized, source), expected)
    mask = np.zeros((30, 30), dtype=bool)
    mask[:, 15:] = True
    assert corner_colours(pixels(unnormalized, mask)[0])[:2] == [(0, 0, 0), (255, 255, 255)]


def test_ambiguous_array_layouts():
    # (3, 5, 3) could be CHW or HWC: numpy arrays read channels-last, torch tensors channels-first
    array = np.zeros((3, 5, 3), dtype=np.uint8)
    assert array_to_rgb_image(array).size == (5, 3)
    assert array_to_rgb_image(torch.from_numpy(array)).size == (3, 5)
    assert array_to_rgb_image(array, input_data_format="channels_first").size == (3, 5)
    assert array_to_rgb_image(np.zeros((1, 4000, 3), dtype=np.uint8)).size == (4000, 1)  # a 1-pixel-high strip


def test_batched_arrays_and_mixed_lists(unnormalized):
    batch = np.stack([np.asarray(smooth(seed=seed)) for seed in range(3)])
    expected = pixels(unnormalized, [smooth(seed=seed) for seed in range(3)])
    torch.testing.assert_close(pixels(unnormalized, batch), expected)
    torch.testing.assert_close(pixels(unnormalized, torch.from_numpy(batch).permute(0, 3, 1, 2)), expected)
    mixed = [smooth(), Image.new("I;16", (5, 900)), np.zeros((9, 9, 3)), Image.new("CMYK", (3000, 2)), quadrants()]
    assert pixels(unnormalized, mixed).shape == (5, 3, CROP, CROP)
    assert pixels(unnormalized, tuple(mixed)).shape == (5, 3, CROP, CROP)


def test_output_formats(unnormalized):
    images = [smooth(), quadrants()]
    as_tensor = pixels(unnormalized, images)
    assert as_tensor.dtype == torch.float32 and as_tensor.is_contiguous()
    as_numpy = pixels(unnormalized, images, return_tensors="np")
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    as_list = pixels(unnormalized, images, return_tensors=None)
    assert isinstance(as_list, list) and as_list[1].shape == (3, CROP, CROP)
    channels_last = pixels(unnormalized, images, data_format="channels_last")
    torch.testing.assert_close(channels_last, as_tensor.permute(0, 2, 3, 1))
    np.testing.assert_allclose(as_numpy, as_tensor.numpy())
    raw_values = pixels(unnormalized, images, do_rescale=False)
    torch.testing.assert_close(raw_values, (as_tensor * 255).round())


def test_uncropped_sizes(unnormalized):
    images = [smooth(64, 48), smooth(48, 64)]
    as_list = pixels(unnormalized, images, do_center_crop=False, return_tensors=None)
    assert [value.shape for value in as_list] == [(3, CROP, 32), (3, 32, CROP)]
    with pytest.raises(ValueError, match="different sizes"):
        pixels(unnormalized, images, do_center_crop=False)
    same = pixels(unnormalized, images, do_center_crop=False, size={"height": 16, "width": 20})
    assert same.shape == (2, 3, 16, 20)


@pytest.mark.parametrize("settings_, draft", [({}, (400, 300)), (SMALL, (200, 150))])  # 1/4 and 1/8 scale
def test_fast_jpeg_decode(tmp_path, settings_, draft):
    path = tmp_path / "large.jpg"
    smooth(1600, 1200).save(path, quality=95)
    exact = CommerceMMImageProcessor(do_normalize=False, **settings_)
    fast = CommerceMMImageProcessor(do_normalize=False, fast_jpeg_decode=True, **settings_)
    difference = (pixels(fast, path) - pixels(exact, path)).abs()
    assert difference.mean() < 0.01 and difference.max() < 0.1
    with Image.open(path) as image:  # the draft is what decodes at a reduced scale: 1600 x 1200 -> `draft`
        fast._draft_jpeg(image, {"do_resize": True, "size": fast.size})
        assert image.size == draft
    unresized = dict(do_resize=False, crop_size={"height": 1200, "width": 1600}, return_tensors=None)
    assert pixels(fast, path, **unresized)[0].shape == (3, 1200, 1600)  # no resize asked: full decode


# ------------------------------------------------------------------------------------------------ errors


def write_corrupt_files(folder: Path) -> dict:
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    buffer = io.BytesIO()
    noise(64, 48).save(buffer, format="PNG")
    truncated = folder / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    text = folder / "notes.txt"
    text.write_text("not an image")
    return {"corrupt": corrupt, "truncated": truncated, "text": text}


@pytest.mark.parametrize("name", ["corrupt", "truncated", "text"])
def test_unreadable_files_are_named_with_their_index(unnormalized, tmp_path, name):
    path = write_corrupt_files(tmp_path)[name]
    with pytest.raises(ValueError, match=rf"image 2: cannot read the image file .*{path.name}"):
        pixels(unnormalized, [smooth(), quadrants(), path])


def test_lazily_opened_corrupt_image(unnormalized, tmp_path):
    with Image.open(write_corrupt_files(tmp_path)["truncated"]) as lazy:  # header fine, pixels missing
        with pytest.raises(ValueError, match="image 1: cannot read"):
            pixels(unnormalized, [smooth(), lazy])


@pytest.mark.parametrize("bad, message", [
    (None, "No images given"),
    ([], "list is empty"),
    (np.zeros((0, 3, 8, 8), dtype=np.uint8), "list is empty"),
    ([smooth(), 3.5], "image 1: unsupported type float"),
    ([[smooth()]], "image 0: unsupported type list"),
    (42, "image 0: unsupported type int"),
    ("missing/file.png", "image 0: no image file at 'missing/file.png'"),
    ("https://example.com/a.jpg", "URLs are not fetched"),
    (np.zeros((8, 8, 2), dtype=np.uint8), r"must be \(H, W\)"),
    (np.zeros((8,), dtype=np.uint8), r"got \(8,\)"),
    (np.zeros((2, 2, 8, 8, 3), dtype=np.uint8), r"got \(2, 2, 8, 8, 3\)"),
    (np.zeros((0, 8, 3), dtype=np.uint8), "empty"),
    (np.full((8, 8, 3), np.nan), "NaN"),
    (torch.full((3, 8, 8), float("inf")), "NaN or infinite"),
    (np.full((8, 8, 3), 200.0), r"must lie in \[0, 1\]"),
    (np.full((8, 8, 3), 3.0), r"must lie in \[0, 1\]"),
    (np.zeros((8, 8, 3), dtype=np.int64), "unsupported image array dtype int64"),
    (Image.new("RGB", (0, 5)), "image is empty"),
])
def test_bad_images_raise_a_clear_value_error(unnormalized, bad, message):
    with pytest.raises(ValueError, match=message):
        pixels(unnormalized, bad)


def test_folder_instead_of_file(unnormalized, tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        pixels(unnormalized, tmp_path)


def test_named_pipe_is_refused_instead_of_blocking(unnormalized, tmp_path):
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)  # opening it for reading waits for a writer, forever if none comes

    def unblock_a_reader():  # so that code opening the pipe fails this test instead of hanging it
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError:  # no reader yet
                time.sleep(0.05)

    threading.Thread(target=unblock_a_reader, daemon=True).start()
    with pytest.raises(ValueError, match="pipe.png' is not a regular file"):
        pixels(unnormalized, [smooth(), pipe])


# ------------------------------------------------------------------------------------------------ properties


MODES = st.sampled_from(GRAY_MODES + COLOUR_MODES + ["1"])


@SETTINGS
@given(width=st.integers(1, 400), height=st.integers(1, 400), stretch=st.sampled_from([1, 1, 25]),
       mode=MODES, seed=st.integers(0, 2**16), crop=st.integers(1, 40))
def test_property_any_mode_and_size_gives_finite_crops(width, height, stretch, mode, seed, crop):
    picture = in_mode(noise(width * stretch, height, seed), mode)
    processor = CommerceMMImageProcessor(size={"shortest_edge": crop}, crop_size={"height": crop, "width": crop})
    values = processor([picture, picture])["pixel_values"]
    assert values.shape == (2, 3, crop, crop) and torch.isfinite(values).all()
    unscaled = processor(picture, do_normalize=False)["pixel_values"]
    assert 0 <= float(unscaled.min()) and float(unscaled.max()) <= 1


@SETTINGS
@given(width=st.integers(1, 120), height=st.integers(1, 120), seed=st.integers(0, 2**16))
def test_property_equals_clip_on_rgb_images(width, height, seed):
    extreme = max(width, height) > 16 * min(width, height)  # where only the cropped region is resampled
    image = smooth(width, height, seed) if extreme else noise(width, height, seed)
    ours = CommerceMMImageProcessor(do_normalize=False, **SMALL)(image)["pixel_values"]
    theirs = CLIPImageProcessorPil(do_normalize=False, **SMALL)(image, return_tensors="pt")["pixel_values"]
    # resampling only the cropped region rounds differently in Pillow's two resize passes: up to 2 levels
    torch.testing.assert_close(ours, theirs, atol=2 * STEP if extreme else STEP, rtol=0)


# ------------------------------------------------------------------------------------------------ tokenizer


def test_trained_tokenizer_special_tokens(multilingual_tokenizer):
    tokenizer = multilingual_tokenizer
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3, 4]
    names = (tokenizer.pad_token, tokenizer.unk_token, tokenizer.cls_token, tokenizer.sep_token, tokenizer.mask_token)
    assert names == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert tokenizer.model_max_length == 20
    assert tokenizer("")["input_ids"] == [tokenizer.cls_token_id, tokenizer.sep_token_id]
    pair = tokenizer("mug", "kaffee")["input_ids"]
    assert pair[0] == tokenizer.cls_token_id and pair.count(tokenizer.sep_token_id) == 2


@pytest.mark.parametrize("text", ["红色陶瓷杯", "빨간 머그컵", "café crème", "кружка", "mug 😀", "ＦＵＬＬ"])
def test_trained_tokenizer_handles_scripts(multilingual_tokenizer, text):
    tokenizer = multilingual_tokenizer
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id and len(ids) > 2
    if tokenizer.unk_token_id not in ids:
        decoded = unicodedata.normalize("NFKC", tokenizer.decode(ids, skip_special_tokens=True)).replace(" ", "")
        assert decoded in (text.lower().replace(" ", ""), "full", "cafecreme")


def test_byte_level_bpe_never_needs_unknown_tokens():
    tokenizer = train_commercemm_tokenizer(MULTILINGUAL, vocab_size=400)
    for text in ["never seen 🦄 ∮ ǅ", "\u0000 control \u200b", "ÆØÅ ß ﬁ"]:
        assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"]
    assert tokenizer.decode(tokenizer("Café 🦄")["input_ids"], skip_special_tokens=True).strip() == "café 🦄"


def test_wordpiece_normalises_like_bert_uncased():
    tokenizer = train_commercemm_tokenizer(MULTILINGUAL, vocab_size=400, algorithm="wordpiece")
    assert tokenizer.tokenize("ÉLÉGANTE") == tokenizer.tokenize("elegante")  # NFD + accents stripped + lowercase
    assert tokenizer.tokenize("ＦＵＬＬ") == tokenizer.tokenize("full")  # NFKC
    assert tokenizer.tokenize("红色")[:2] == ["红", "色"]  # CJK characters one by one
    cased = train_commercemm_tokenizer(MULTILINGUAL, vocab_size=400, algorithm="wordpiece", lowercase=False)
    assert cased.tokenize("Taza") != cased.tokenize("taza") and "á" in "".join(cased.tokenize("cerámica"))


def test_tokenizer_save_load_round_trip(multilingual_tokenizer, tmp_path):
    multilingual_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = ["Taza de cerámica 😀", "红色陶瓷咖啡杯 " * 10, ""]
    assert reloaded(texts, truncation=True)["input_ids"] == multilingual_tokenizer(texts, truncation=True)["input_ids"]
    assert reloaded.model_max_length == 20 and reloaded.mask_token_id == 4


def test_byte_level_bpe_training_is_reproducible_across_processes(tmp_path):
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps(MULTILINGUAL))
    tokenizer_file = PROCESSING_DIR / "tokenization_commercemm.py"
    script = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('tok', {str(tokenizer_file)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"texts = json.load(open({str(corpus)!r}))\n"
        "print(json.dumps(module.train_commercemm_tokenizer(texts, vocab_size=400).get_vocab(), sort_keys=True))\n"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    here = train_commercemm_tokenizer(MULTILINGUAL, vocab_size=400).get_vocab()
    assert json.loads(other.stdout.strip().splitlines()[-1]) == here


@pytest.mark.parametrize("kwargs, message", [
    (dict(texts=MULTILINGUAL, algorithm="unigram"), "algorithm must be"),
    (dict(texts=["", "  ", None]), "no tokens"),
    (dict(texts=["ok", 3]), r"texts\[1\] is a int"),
    (dict(texts="one string"), "not one string"),
    (dict(texts=MULTILINGUAL, vocab_size=5), "vocab_size"),
    (dict(texts=MULTILINGUAL, model_max_length=1), "model_max_length"),
])
def test_tokenizer_training_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_commercemm_tokenizer(**kwargs)


def test_tokenizer_trains_from_a_generator():
    tokenizer = train_commercemm_tokenizer((text for text in MULTILINGUAL), vocab_size=300, algorithm="wordpiece")
    assert tokenizer.vocab_size > len(SPECIAL_TOKENS)


# ------------------------------------------------------------------------------------------------ processor


def test_processor_images_texts_and_both(multilingual_processor):
    images = [smooth(), quadrants(), Image.new("RGBA", (5, 300))]
    both = multilingual_processor(images=images, text=["red mug", "taza roja", "红色陶瓷杯"])
    assert set(both) == {"pixel_values", "input_ids", "attention_mask"}
    assert both["pixel_values"].shape == (3, 3, CROP, CROP) and both["input_ids"].shape[0] == 3
    assert both["input_ids"].dtype == torch.long
    assert set(multilingual_processor(text="only a text")) == {"input_ids", "attention_mask"}
    assert set(multilingual_processor(images=smooth())) == {"pixel_values"}
    unpaired = multilingual_processor(images=images[:2], text=["a", "b", "c", "d", "e"])
    assert unpaired["pixel_values"].shape[0] == 2 and unpaired["input_ids"].shape[0] == 5
    torch.testing.assert_close(both["pixel_values"], multilingual_processor.image_processor(images)["pixel_values"])


def test_processor_padding_truncation_and_empty_text(multilingual_processor):
    batch = multilingual_processor(text=["mug " * 3000, "", "red mug"])
    limit = multilingual_processor.tokenizer.model_max_length
    assert batch["input_ids"].shape == (3, limit)  # padded to the longest, which was truncated to the limit
    cls_id, sep_id = multilingual_processor.tokenizer.cls_token_id, multilingual_processor.tokenizer.sep_token_id
    assert batch["input_ids"][1][batch["attention_mask"][1].bool()].tolist() == [cls_id, sep_id]
    pad_id = multilingual_processor.tokenizer.pad_token_id
    assert batch["input_ids"][0, -1] == sep_id and batch["input_ids"][1, -1] == pad_id
    assert multilingual_processor(text=["mug " * 3000], max_length=8)["input_ids"].shape == (1, 8)
    padded = multilingual_processor(text=["red", "red mug red mug"], padding="max_length", max_length=12)
    assert padded["input_ids"].shape == (2, 12)


def test_processor_token_type_ids_and_output_formats(multilingual_processor):
    assert "token_type_ids" not in multilingual_processor(text="mug")
    assert "token_type_ids" in multilingual_processor(text="mug", return_token_type_ids=True)
    as_numpy = multilingual_processor(images=smooth(), text=["mug", "red mug"], return_tensors="np")
    assert isinstance(as_numpy["pixel_values"], np.ndarray) and isinstance(as_numpy["input_ids"], np.ndarray)
    as_lists = multilingual_processor(images=smooth(), text=["mug", "red mug"], return_tensors=None)
    assert isinstance(as_lists["input_ids"], list) and isinstance(as_lists["pixel_values"], list)
    as_torch = multilingual_processor(images=smooth(), text=["mug", "red mug"], return_tensors="pt")
    assert isinstance(as_torch["pixel_values"], torch.Tensor) and isinstance(as_torch["input_ids"], torch.Tensor)
    assert multilingual_processor.model_input_names == ["input_ids", "attention_mask", "pixel_values"]


def test_processor_routes_keyword_arguments(multilingual_processor):
    picture = smooth()
    unscaled = multilingual_processor(images=picture, do_normalize=False)["pixel_values"]
    torch.testing.assert_close(unscaled, pixels(CommerceMMImageProcessor(do_normalize=False, **SMALL), picture))
    per_modality = multilingual_processor(images=picture, text="red mug " * 20, images_kwargs={"do_normalize": False},
                             text_kwargs={"max_length": 6})
    torch.testing.assert_close(per_modality["pixel_values"], unscaled)
    assert per_modality["input_ids"].shape == (1, 6)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs images, text, or both"),
    ({"text": None, "images": None}, "needs images, text, or both"),
    ({"text": ["ok", None]}, r"text items \[1\] are not strings \(item 1 is NoneType\)"),
    ({"text": ["ok", 1, 2.5]}, r"text items \[1, 2\]"),
    ({"text": 5}, "text must be a string or a non-empty list of strings, got int"),
    ({"text": []}, "non-empty list of strings, got list"),
    ({"images": [smooth(), "nowhere.png"]}, "image 1: no image file"),
])
def test_processor_errors(multilingual_processor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        multilingual_processor(**kwargs)


def test_processor_needs_a_tokenizer_and_defaults_the_image_processor(multilingual_tokenizer):
    with pytest.raises(ValueError, match="needs a tokenizer"):
        CommerceMMProcessor(CommerceMMImageProcessor())
    default = CommerceMMProcessor(tokenizer=multilingual_tokenizer)
    assert default(images=smooth())["pixel_values"].shape == (1, 3, 224, 224)


def test_processor_with_a_tokenizer_without_a_length_limit(multilingual_tokenizer, tmp_path):
    # The shared fixture's backend keeps the truncation of its last call (max_length=6 above), and a tokenizer.json
    # saved with it says max_length=6, which the processor honours (what the saved tokenizer says wins): clear it.
    multilingual_tokenizer.backend_tokenizer.no_truncation()
    multilingual_tokenizer.save_pretrained(tmp_path)
    unlimited = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"), pad_token="[PAD]")
    assert unlimited.model_max_length > 1e29
    long_text = "mug " * 100
    batch = CommerceMMProcessor(tokenizer=unlimited)(text=[long_text, ""])
    assert batch["input_ids"][0].tolist() == unlimited(long_text)["input_ids"]  # nothing truncated


def test_processor_save_load_round_trip(multilingual_processor, tmp_path):
    multilingual_processor.save_pretrained(tmp_path)
    saved = {path.name for path in tmp_path.iterdir()}
    assert {"processor_config.json", "tokenizer.json", "image_processing_commercemm.py"} <= saved
    inputs = dict(images=[smooth(), quadrants(), Image.new("I;16", (9, 700), 30000)],
                  text=["Taza roja 😀", "", "红色陶瓷咖啡杯 " * 30])
    expected = multilingual_processor(**inputs)
    for loaded in (CommerceMMProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is CommerceMMProcessor and type(loaded.image_processor) is CommerceMMImageProcessor
        assert loaded.tokenizer.model_max_length == multilingual_processor.tokenizer.model_max_length
        result = loaded(**inputs)
        assert set(result) == set(expected)
        for key in expected:
            assert torch.equal(result[key], expected[key]), key
    image_processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert image_processor.to_dict() == multilingual_processor.image_processor.to_dict()


def test_image_processor_save_load_keeps_custom_settings(tmp_path):
    custom = CommerceMMImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 30, "width": 20},
                                      fast_jpeg_decode=True, reducing_gap=None, resample=1, return_tensors="np")
    custom.save_pretrained(tmp_path)
    loaded = CommerceMMImageProcessor.from_pretrained(tmp_path)
    assert loaded.fast_jpeg_decode is True and loaded.reducing_gap is None and loaded.crop_size.width == 20
    assert loaded.resample == 1 and loaded.size.shortest_edge == 40
    values = loaded(smooth())["pixel_values"]
    assert isinstance(values, np.ndarray) and values.shape == (1, 3, 30, 20)
    np.testing.assert_array_equal(values, custom(smooth())["pixel_values"])


@SETTINGS
@given(texts=st.lists(st.one_of(st.text(max_size=300), st.just(""), st.text(min_size=2000, max_size=3000)),
                      min_size=1, max_size=4),
       n_images=st.integers(0, 3))
def test_property_any_unicode_text(multilingual_processor, texts, n_images):
    images = [smooth(seed=seed) for seed in range(n_images)] or None
    batch = multilingual_processor(images=images, text=texts)
    tokenizer = multilingual_processor.tokenizer
    assert batch["input_ids"].shape[0] == len(texts) and batch["input_ids"].shape[1] <= tokenizer.model_max_length
    assert (batch["input_ids"][:, 0] == tokenizer.cls_token_id).all()
    lengths = batch["attention_mask"].sum(1)
    assert (batch["input_ids"][torch.arange(len(texts)), lengths - 1] == tokenizer.sep_token_id).all()
    assert n_images == 0 or batch["pixel_values"].shape == (n_images, 3, CROP, CROP)


# ------------------------------------------------------------------------------------------------ remote code, docs


PROCESSING_FILES = ["image_processing_commercemm.py", "processing_commercemm.py", "tokenization_commercemm.py"]
ALLOWED = {"transformers", "torch", "numpy", "PIL", "tokenizers", "collections", "io", "os", "typing"}


@pytest.mark.parametrize("name", PROCESSING_FILES)
def test_files_travel_as_remote_code(name):
    """Only single-dot sibling imports (copied with the file) and libraries a Hub user has."""
    source = (PROCESSING_DIR / name).read_text()
    for line in source.splitlines():
        relative = re.match(r"^\s*from\s+(\.+)(\S*)\s+import", line)
        if relative:
            assert relative.group(1) == "." and (PROCESSING_DIR / f"{relative.group(2)}.py").exists(), line
            continue
        absolute = re.match(r"^\s*(?:from|import)\s+([\w.]+)", line)
        if absolute:
            assert absolute.group(1).split(".")[0] in ALLOWED, line


def test_remote_code_loads_without_the_package(multilingual_processor, tmp_path):
    """A fresh process that cannot import commercemm_hf loads the saved processor through the copied code."""
    multilingual_processor.save_pretrained(tmp_path / "saved")
    loaded = run_without_package(
        """
        import json
        from PIL import Image
        from transformers import AutoProcessor
        loaded = AutoProcessor.from_pretrained("saved", trust_remote_code=True)
        batch = loaded(images=Image.new("LA", (50, 20)), text=["red mug", ""])
        print(json.dumps({"class": type(loaded).__name__, "pixel_values": batch["pixel_values"].tolist(),
                          "input_ids": batch["input_ids"].tolist()}))
        """,
        tmp_path,
    )
    expected = multilingual_processor(images=Image.new("LA", (50, 20)), text=["red mug", ""])
    assert loaded["class"] == "CommerceMMProcessor"
    assert torch.equal(torch.tensor(loaded["input_ids"]), expected["input_ids"])
    torch.testing.assert_close(torch.tensor(loaded["pixel_values"]), expected["pixel_values"])


@pytest.mark.parametrize("module", [image_processing_commercemm, processing_commercemm, tokenization_commercemm])
def test_docstring_examples_run(module):
    results = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0 and results.failed == 0
