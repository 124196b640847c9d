"""CommerceMM image processor: RGB conversion, shortest-edge resize, center crop, rescale and normalise.

transformers' `PilBackend` (so `save_pretrained`, `from_pretrained`, `to_dict` and `AutoImageProcessor` work as for
`CLIPImageProcessorPil`), with a faster batched path and no torchvision:

* per image only C-level PIL work runs: EXIF rotation, mode conversion, resize (with PIL's `reducing_gap` for
  big downscales; for extreme aspect ratios only the region the center crop keeps) and crop;
* the batch is stacked as one `uint8` array and rescaled + normalised by one fused torch operation.

Real product images come in every shape, so conversion to RGB is explicit rather than left to `convert("RGB")`:
transparent images are composited onto white (the usual product-photo background), 16-bit images are scaled by
their range (`I;16` / 257) instead of being clipped at 255, and EXIF orientation is applied. See `to_rgb_image`.

This file travels as Hugging Face remote code: it imports transformers, torch, numpy and PIL only.
"""

import io
import os

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_backends import PilBackend
from transformers.image_transforms import get_size_with_aspect_ratio
from transformers.image_utils import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ChannelDimension,
    PILImageResampling,
    get_image_size_for_max_height_width,
)
from transformers.processing_utils import ImagesKwargs


class CommerceMMImageProcessorKwargs(ImagesKwargs, total=False):
    """Image kwargs beyond transformers' `ImagesKwargs`.

    fast_jpeg_decode: decode JPEG files given by path (or bytes) at a reduced scale with PIL's `draft` when they are
        at least twice the resize target; several times faster on photos, but pixel values differ slightly from
        a full decode (off by default).
    reducing_gap: PIL's `reducing_gap` for downscaling: a large downscale first box-reduces by an integer factor,
        keeping at least `reducing_gap` times the target size, then resamples. 3.0 (the default) is
        indistinguishable from exact resampling in practice and much faster on big photos; it only acts when the
        image is more than 6 times the target. `None` resamples exactly, as `CLIPImageProcessorPil` does.
    """

    fast_jpeg_decode: bool | None
    reducing_gap: float | None


CommerceMMImagesKwargs = CommerceMMImageProcessorKwargs  # the earlier name


_ORIENTATION_TAG = 0x0112
_TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_COLOUR_KEY_MODES = ("1", "L", "P", "RGB")  # modes where `info["transparency"]` marks a transparent colour
_UNSUPPORTED_DTYPE = "use uint8, uint16, bool, or float in [0, 1]"


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # unreadable EXIF metadata: the pixels are still fine, show them as stored
        return 1


def _wide_to_gray(image: Image.Image) -> Image.Image:
    """An 8-bit `L` image for a 16-bit (`I;16*`), 32-bit integer (`I`) or float (`F`) image.

    `I;16*` is scaled by its bit depth (value / 257). `I` and `F` carry no depth, so the smallest nominal range
    holding all values is used: [0, 1] (floats only), else [0, 255], else [0, 65535] (16-bit data opened as `I`);
    values outside all of these are stretched linearly from [min(0, lowest), max(0, highest)] to [0, 255].
    """
    values = np.asarray(image)
    if image.mode == "F" and not np.isfinite(values).all():
        raise ValueError("the F (float) image holds NaN or infinite values.")
    low, high = values.min(), values.max()
    if image.mode.startswith("I;16"):
        low, top = 0.0, 65535.0
    elif image.mode == "F" and 0 <= low and high <= 1:
        low, top = 0.0, 1.0
    elif 0 <= low and high <= 255:
        low, top = 0.0, 255.0
    elif 0 <= low and high <= 65535:
        low, top = 0.0, 65535.0
    else:
        low, top = float(min(low, 0)), float(max(high, 0))
    gray = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (top - low))
    return Image.fromarray(np.rint(gray, out=gray).clip(0, 255).astype(np.uint8), mode="L")


def to_rgb_image(image: Image.Image) -> Image.Image:
    """An 8-bit RGB PIL image for a PIL image of any mode, turned upright by its EXIF orientation tag.

    Transparency (alpha channels, premultiplied alpha, palette or colour-key transparency) is composited onto white;
    16-bit, 32-bit and float images are scaled to 8 bits by their range (see `_wide_to_gray`); every other mode
    (`1`, `L`, `P`, `CMYK`, `YCbCr`, `LAB`, `HSV`, ...) goes through PIL's conversion. Embedded ICC profiles are not
    applied (as in transformers' processors). The input image is never modified.

    Example:
        >>> from PIL import Image
        >>> to_rgb_image(Image.new("RGBA", (2, 2), (255, 0, 0, 0))).getpixel((0, 0))
        (255, 255, 255)
        >>> import numpy as np
        >>> to_rgb_image(Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))).getpixel((0, 0))
        (255, 255, 255)
    """
    if image.width == 0 or image.height == 0:
        raise ValueError(f"the image is empty (size {image.size}).")
    if _exif_orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in _COLOUR_KEY_MODES and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode == "RGB":
        return image
    if mode in _TRANSPARENT_MODES:
        if mode != "RGBA":  # LA / PA to RGBA; premultiplied RGBa / La are un-premultiplied first
            image = (image.convert("LA") if mode == "La" else image).convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _wide_to_gray(image).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise ValueError(f"cannot convert a PIL image of mode {mode} to RGB ({error}).") from None


def _channel_axis_first(shape: tuple, is_torch: bool, input_data_format) -> bool:
    """Whether a 3-d image array is channels-first; ambiguous shapes follow the input's own convention."""
    if input_data_format is not None:
        return ChannelDimension(input_data_format) == ChannelDimension.FIRST
    first, last = shape[0] in (1, 3, 4), shape[-1] in (1, 3, 4)
    if first and last:  # e.g. (3, 4, 3): torch tensors are CHW by convention, numpy arrays HWC (as PIL gives them)
        return is_torch
    return first


def array_to_rgb_image(array, input_data_format=None) -> Image.Image:
    """An RGB PIL image for one image as a numpy array or torch tensor.

    Shapes: (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4 (4 = RGBA, composited onto white). When both ends
    could be channels (e.g. (3, 5, 4)), `input_data_format` decides, else torch tensors are read channels-first and
    numpy arrays channels-last. dtypes: uint8; uint16 (scaled / 257); bool; float in [0, 1] (anything else, or
    NaN, is refused rather than guessed).

    Example:
        >>> import numpy as np
        >>> array_to_rgb_image(np.ones((2, 3, 3))).size
        (3, 2)
    """
    image = Image.fromarray(np.ascontiguousarray(array_to_uint8(array, input_data_format)))
    return to_rgb_image(image) if image.mode != "RGB" else image


def array_to_uint8(array, input_data_format=None) -> np.ndarray:
    """One image array or tensor as uint8 (H, W) or (H, W, C), C in 1, 3, 4: the layout and dtype rules of
    `array_to_rgb_image`, without any channel conversion."""
    is_torch = isinstance(array, torch.Tensor)
    if is_torch:
        array = array.detach().cpu()
        array = (array.float() if array.is_floating_point() else array).numpy()
    array = np.asarray(array)
    if array.ndim == 3 and _channel_axis_first(array.shape, is_torch, input_data_format):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"an image array must be (H, W), (H, W, 1|3|4) or (1|3|4, H, W), or a batch of such; got {array.shape}."
        )
    if array.size == 0:
        raise ValueError(f"the image array is empty {array.shape}.")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("the image array holds NaN or infinite values.")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise ValueError(
                f"float image arrays must lie in [0, 1]; got [{low}, {high}] (divide by 255, or give uint8)."
            )
        array = np.rint(array * 255.0).astype(np.uint8)
    elif array.dtype == np.uint16:
        array = ((array.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)  # round(value / 257)
    elif array.dtype != np.uint8:
        raise ValueError(f"unsupported image array dtype {array.dtype} ({_UNSUPPORTED_DTYPE}).")
    return array


#: PIL modes whose bands `do_convert_rgb=False` reads as they are (8 bits per channel)
_BAND_MODES = ("L", "LA", "RGB", "RGBA", "CMYK")


def _pil_channels(image: Image.Image) -> np.ndarray:
    """(H, W, C) uint8 bands of a PIL image, unconverted (`do_convert_rgb=False`), turned upright by EXIF."""
    if image.width == 0 or image.height == 0:
        raise ValueError(f"the image is empty (size {image.size}).")
    if _exif_orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode not in _BAND_MODES:
        raise ValueError(
            f"a {image.mode} image has no 8-bit channels to keep with do_convert_rgb=False (modes kept as they are: "
            f"{', '.join(_BAND_MODES)}); leave do_convert_rgb on to convert it to RGB."
        )
    return np.asarray(image).reshape(image.height, image.width, -1)


def _per_channel(value, name: str, channels: int) -> torch.Tensor:
    """`image_mean` / `image_std` as `channels` per-channel floats: one value (every channel) or one per channel."""
    values = torch.tensor(value, dtype=torch.float32).flatten()
    if values.numel() not in (1, channels):
        raise ValueError(
            f"{name} must be one value or {channels} (one per channel of the images: RGB unless do_convert_rgb=False "
            f"keeps other channels), got {list(values.tolist())}."
        )
    if name == "image_std" and not bool((values > 0).all()):
        raise ValueError(f"image_std must be positive, got {list(values.tolist())}.")
    return values.expand(channels)


class CommerceMMImageProcessor(PilBackend):
    r"""Image processor for CommerceMM: RGB conversion, shortest-edge resize, center crop, rescale, normalise.

    Defaults follow CLIP: shortest edge 224 (bicubic), center crop 224 x 224, OpenAI CLIP mean/std. On RGB images
    the result equals `CLIPImageProcessorPil` with the same settings (to float rounding) when the downscale is
    below 6x and the aspect ratio within 1:16; beyond, `reducing_gap=3.0` (10x faster on a 12-megapixel photo) and
    region-only resampling differ from it by about one 8-bit step on photos (`reducing_gap=None` for exactness).

    Inputs: one image or a list (or a 4-d array/tensor batch) of
    * PIL images of any mode (see `to_rgb_image`: transparency onto white, 16-bit scaled, EXIF orientation applied),
    * numpy arrays / torch tensors, HWC or CHW, uint8, uint16, bool or float in [0, 1] (see `array_to_rgb_image`),
    * file paths (`str` / `pathlib.Path`), encoded image `bytes`, binary file objects, or `datasets` image dicts
      (`{"bytes": ..., "path": ...}`); multi-frame files give their first frame.
    Any size from 1 x 1 works; extreme aspect ratios (1 x 5000) never allocate the full resized image. Problems
    raise a `ValueError` that names the item (`image 3: ...`).

    Output: `BatchFeature` with `pixel_values`, float32 `(batch, 3, crop_height, crop_width)`; a torch tensor by
    default, numpy with `return_tensors="np"`, a list of per-image arrays with `return_tensors=None`.
    `do_convert_rgb=False` converts nothing: each image keeps its channels (L: 1, RGBA / 4-channel arrays: 4, ...),
    each resized on its own, for a model whose `vision_config.num_channels` matches; `image_mean` / `image_std` then
    give one value, or one per channel. With `do_center_crop=False` images of different sizes come back only as a
    list (`return_tensors=None`).

    Example:
        >>> from PIL import Image
        >>> processor = CommerceMMImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
        >>> processor([Image.new("RGBA", (120, 80)), Image.new("I;16", (9, 300))])["pixel_values"].shape
        torch.Size([2, 3, 64, 64])
    """

    valid_kwargs = CommerceMMImageProcessorKwargs
    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"shortest_edge": 224}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    fast_jpeg_decode = False
    reducing_gap = 3.0
    return_tensors = "pt"
    model_input_names = ["pixel_values"]

    # ------------------------------------------------------------------------------------------------ geometry

    @staticmethod
    def _resized_size(width: int, height: int, size) -> tuple[int, int]:
        """(width, height) after resizing, as transformers computes it, never with a side of 0."""
        if size.shortest_edge:
            new_height, new_width = get_size_with_aspect_ratio((height, width), size.shortest_edge, size.longest_edge)
        elif size.height and size.width:
            new_height, new_width = size.height, size.width
        elif size.max_height and size.max_width:
            new_height, new_width = get_image_size_for_max_height_width(
                (height, width), size.max_height, size.max_width
            )
        else:
            raise ValueError(f"size must give shortest_edge, height and width, or max_height and max_width: {size}.")
        return max(1, int(new_width)), max(1, int(new_height))

    def _resize_and_crop(self, image: Image.Image, options: dict) -> Image.Image:
        width, height = image.size
        resized = self._resized_size(width, height, options["size"]) if options["do_resize"] else (width, height)
        resample, gap = options["resample"], options["reducing_gap"]
        if not options["do_center_crop"]:
            return image if resized == (width, height) else image.resize(resized, resample, reducing_gap=gap)
        crop = options["crop_size"]
        left, top = (resized[0] - crop.width) // 2, (resized[1] - crop.height) // 2
        if resized != (width, height) and resized[0] * resized[1] <= 16 * crop.width * crop.height:
            image = image.resize(resized, resample, reducing_gap=gap)  # up to 1:16 shapes: exactly as transformers
        if image.size == resized:
            return image.crop((left, top, left + crop.width, top + crop.height))  # outside the image: black
        # Extreme aspect ratios (a 1 x 5000 image would resize to 224 x 1,120,000): resample only the region the
        # crop keeps. The filter sees the same source pixels at the same scale as in a full resize; pixels differ
        # only by PIL's 8-bit rounding between its two passes, whose order PIL picks from the shapes.
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + crop.width, resized[0]), min(top + crop.height, resized[1])
        scale_x, scale_y = width / resized[0], height / resized[1]
        box = (x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y)
        part = image.resize((x1 - x0, y1 - y0), resample, box=box, reducing_gap=gap)
        if part.size == (crop.width, crop.height):
            return part
        canvas = Image.new(part.mode, (crop.width, crop.height))  # black padding, as transformers' center_crop pads 0
        canvas.paste(part, (x0 - left, y0 - top))
        return canvas

    # ------------------------------------------------------------------------------------------------ inputs

    def _draft_jpeg(self, image: Image.Image, options: dict) -> None:
        """Let libjpeg decode at 1/2, 1/4 or 1/8 scale while the result stays at least the resize target."""
        if image.format != "JPEG" or not options["do_resize"]:
            return
        width, height = image.size
        swapped = _exif_orientation(image) in (5, 6, 7, 8)  # rotated by 90 degrees when shown
        shown_width, shown_height = (height, width) if swapped else (width, height)
        target = self._resized_size(shown_width, shown_height, options["size"])
        image.draft(None, target[::-1] if swapped else target)

    def _file_pixels(self, source, options: dict) -> np.ndarray:
        name = repr(str(source)) if isinstance(source, (str, os.PathLike)) else "from bytes or a file object"
        if isinstance(source, (str, os.PathLike)) and os.path.exists(source) and not (
            os.path.isfile(source) or os.path.isdir(source)
        ):  # PIL would block forever reading a named pipe that nobody writes to
            raise ValueError(f"{name} is not a regular file (a named pipe, socket or device), not an image file.")
        try:
            image = Image.open(source)
        except FileNotFoundError:
            raise ValueError(f"no image file at {name}.") from None
        except IsADirectoryError:
            raise ValueError(f"{name} is a folder, not an image file.") from None
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
            raise ValueError(f"cannot read the image file {name} ({error}).") from None
        with image:
            try:
                if options["fast_jpeg_decode"]:
                    self._draft_jpeg(image, options)
                image.load()
            except (OSError, SyntaxError, ValueError, EOFError) as error:
                raise ValueError(f"cannot read the image file {name} ({error}).") from None
            # convert and resize while the file is open: a closed PIL image loses its pixels
            if not options["do_convert_rgb"]:
                return self._resize_and_crop_channels(_pil_channels(image), options)
            return np.asarray(self._resize_and_crop(to_rgb_image(image), options))

    def _pixels(self, item, options: dict) -> np.ndarray:
        """(H, W, 3) uint8 pixels of one input item, resized and cropped."""
        if isinstance(item, dict) and ("bytes" in item or "path" in item):  # `datasets.Image(decode=False)` rows
            item = item["bytes"] if item.get("bytes") is not None else item.get("path")
        if isinstance(item, (bytes, bytearray, memoryview)):
            item = io.BytesIO(item)
        if isinstance(item, str) and item.startswith(("http://", "https://")):
            raise ValueError(f"URLs are not fetched ({item!r}): download the image and give its path or bytes.")
        if isinstance(item, (str, os.PathLike)) or hasattr(item, "read"):
            return self._file_pixels(item, options)
        if not options["do_convert_rgb"] and isinstance(item, (Image.Image, np.ndarray, torch.Tensor)):
            channels = (_pil_channels(item) if isinstance(item, Image.Image)
                        else array_to_uint8(item, options["input_data_format"]))
            return self._resize_and_crop_channels(channels.reshape(*channels.shape[:2], -1), options)
        if isinstance(item, Image.Image):
            image = to_rgb_image(item)
        elif isinstance(item, (np.ndarray, torch.Tensor)):
            image = array_to_rgb_image(item, options["input_data_format"])
        else:
            raise ValueError(
                f"unsupported type {type(item).__name__}; give a PIL image, a numpy array, a torch tensor, a file "
                "path or image bytes."
            )
        return np.asarray(self._resize_and_crop(image, options))

    def _resize_and_crop_channels(self, channels: np.ndarray, options: dict) -> np.ndarray:
        """(H, W, C) uint8 -> resized and cropped (H', W', C): RGB as one image (as with do_convert_rgb), any other
        channel count one channel at a time, so no channel is read as alpha or colour."""
        if channels.shape[-1] == 3:
            return np.asarray(self._resize_and_crop(Image.fromarray(np.ascontiguousarray(channels)), options))
        bands = [self._resize_and_crop(Image.fromarray(np.ascontiguousarray(channels[..., index])), options)
                 for index in range(channels.shape[-1])]
        return np.stack([np.asarray(band) for band in bands], axis=-1)

    @staticmethod
    def _as_items(images) -> list:
        if images is None:
            raise ValueError("No images given (images=None).")
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            items = list(images)  # a (batch, ...) array or tensor
        elif isinstance(images, (list, tuple)):
            items = list(images)
        else:
            items = [images]
        if not items:
            raise ValueError("No images given: the list is empty.")
        return items

    # ------------------------------------------------------------------------------------------------ batch

    def _preprocess_image_like_inputs(self, images, *args, **kwargs) -> BatchFeature:
        """All of preprocessing (`preprocess` resolves the defaults and validates the kwargs, then calls this)."""
        resample = kwargs["resample"] if kwargs.get("resample") is not None else self.resample
        options = {
            "do_resize": bool(kwargs.get("do_resize")),
            "size": kwargs.get("size"),
            "do_center_crop": bool(kwargs.get("do_center_crop")),
            "crop_size": kwargs.get("crop_size"),
            "resample": PILImageResampling(resample),
            "reducing_gap": kwargs.get("reducing_gap"),
            "fast_jpeg_decode": bool(kwargs.get("fast_jpeg_decode")),
            "input_data_format": kwargs.get("input_data_format"),
            "do_convert_rgb": kwargs.get("do_convert_rgb") is not False,
        }
        pixels = []
        for index, item in enumerate(self._as_items(images)):
            try:
                pixels.append(self._pixels(item, options))
            except ValueError as error:
                raise ValueError(f"image {index}: {error}") from error
            except (OSError, SyntaxError, EOFError) as error:  # lazily loaded PIL images fail only now
                raise ValueError(f"image {index}: cannot read the image data ({error}).") from error
        channel_counts = sorted({array.shape[-1] for array in pixels})
        if len(channel_counts) > 1:
            raise ValueError(
                f"Images with different channel counts {channel_counts} (do_convert_rgb=False keeps each image's "
                "channels) cannot form one batch: give images of one kind, or leave do_convert_rgb on."
            )
        scale, shift = self._scale_and_shift(kwargs, channel_counts[0])
        channels_last = kwargs.get("data_format") is not None and (
            ChannelDimension(kwargs["data_format"]) == ChannelDimension.LAST
        )
        return_tensors = kwargs.get("return_tensors")
        if len({array.shape for array in pixels}) == 1:
            values = self._rescale_and_normalize(np.stack(pixels), scale, shift, channels_last)
        elif return_tensors is None:
            values = [self._rescale_and_normalize(np.stack([one]), scale, shift, channels_last)[0] for one in pixels]
        else:
            shapes = sorted({array.shape[:2] for array in pixels})
            raise ValueError(
                f"Images of different sizes (height, width) {shapes} cannot form one tensor: enable do_center_crop, "
                "give size as height and width, or use return_tensors=None for a list."
            )
        if return_tensors is None:
            return BatchFeature({"pixel_values": [value.numpy() for value in values]})
        if kwargs.get("device") is not None and return_tensors == "pt":
            values = values.to(kwargs["device"])
        return BatchFeature({"pixel_values": values}, tensor_type=return_tensors)

    @staticmethod
    def _scale_and_shift(kwargs, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel a, b with (pixel * rescale_factor - mean) / std == pixel * a + b."""
        scale = torch.full((channels,), float(kwargs["rescale_factor"]) if kwargs.get("do_rescale") else 1.0)
        shift = torch.zeros(channels)
        if kwargs.get("do_normalize"):
            mean, std = (_per_channel(kwargs[name], name, channels) for name in ("image_mean", "image_std"))
            scale, shift = scale / std, -mean / std
        return scale, shift

    @staticmethod
    def _rescale_and_normalize(batch: np.ndarray, scale, shift, channels_last: bool) -> torch.Tensor:
        """(B, H, W, C) uint8 -> float32 (B, C, H, W) or (B, H, W, C), in one fused multiply-add over the batch."""
        if channels_last:
            return torch.addcmul(shift, torch.from_numpy(batch), scale)
        # transposing the small uint8 batch first lets the float pass run over contiguous memory (2x faster than
        # reading the permuted uint8 view; the same values)
        pixels = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
        out = torch.empty(pixels.shape, dtype=torch.float32)
        return torch.addcmul(shift.view(-1, 1, 1), pixels, scale.view(-1, 1, 1), out=out)


__all__ = ["CommerceMMImageProcessor", "CommerceMMImageProcessorKwargs", "array_to_rgb_image", "array_to_uint8",
           "to_rgb_image"]
