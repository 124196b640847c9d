"""CommerceMM image processor: resize (shortest edge), center crop, rescale and normalise, with PIL + torch only.

Per image, only C-level PIL work runs (EXIF rotation, mode conversion, resize, crop); the batch is then stacked as
one uint8 array and rescaled + normalised in one fused torch operation. No torchvision is needed.

Real product images come in every shape, so conversion is explicit rather than left to `Image.convert("RGB")`:
transparent images are composited onto white (the usual product-photo background), 16-bit images are scaled by
their real range (`I;16` / 257) instead of being clipped at 255, and EXIF orientation is applied.

This file travels as Hugging Face remote code: transformers, torch, numpy and PIL only.
"""

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs


class CommerceMMImagesKwargs(ImagesKwargs, total=False):
    """fast_jpeg_decode: decode JPEG files given by path at a reduced scale (PIL's `draft`) when they are much
    larger than the target size; much faster, and pixel values differ slightly from a full decode."""

    fast_jpeg_decode: bool | None


_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb_image(image: Image.Image) -> Image.Image:
    """An 8-bit RGB PIL image for a PIL image of any mode, orientated by its EXIF tag."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _TRANSPARENT_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"The {mode} image holds NaN or infinite values.")
        if mode == "F":
            # float images: [0, 1] when they fit there, else treated as 8-bit values
            scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        elif mode == "I" and values.max(initial=0) > 65535:
            scale = 255.0 / values.max()
        elif mode == "I" and values.max(initial=0) <= 255 and values.min(initial=0) >= 0:
            scale = 1.0
        else:
            scale = 1.0 / 257.0  # 16-bit range 0..65535 -> 0..255
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")


def _array_to_image(array: np.ndarray, where: str) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"{where}: an image array must be (H, W), (H, W, 1|3|4) or (1|3|4, H, W); got {array.shape}.")
    if array.size == 0:
        raise ValueError(f"{where}: the image array is empty {array.shape}.")
    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: the image array holds NaN or infinite values.")
        if array.min() < 0 or array.max() > 1:
            raise ValueError(f"{where}: float image arrays must lie in [0, 1]; got [{array.min()}, {array.max()}].")
        array = np.rint(array * 255).astype(np.uint8)
    elif array.dtype == np.uint16:
        array = np.rint(array / 257.0).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    else:
        raise ValueError(f"{where}: unsupported image array dtype {array.dtype} (use uint8, uint16 or float in [0, 1]).")
    return Image.fromarray(array)


def _open_image_file(path, target_short_edge: int | None, fast_jpeg_decode: bool, where: str) -> Image.Image:
    try:
        image = Image.open(path)
        if fast_jpeg_decode and target_short_edge and image.format == "JPEG":
            width, height = image.size
            factor = target_short_edge / min(width, height)
            image.draft("RGB", (math.ceil(width * factor), math.ceil(height * factor)))
        image.load()
    except FileNotFoundError:
        raise ValueError(f"{where}: no image file at {str(path)!r}.") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{where}: cannot read the image file {str(path)!r} ({error}).") from None
    return image


class CommerceMMImageProcessor(PilBackend):
    r"""Image processor for CommerceMM: RGB conversion, shortest-edge resize, center crop, rescale, normalise.

    Takes one image or a list: PIL images of any mode, numpy arrays (HWC/CHW, uint8, uint16 or float in [0, 1]),
    torch tensors, or file paths. Returns `pixel_values` `(batch, 3, crop_height, crop_width)`.

    Example:
        >>> from PIL import Image
        >>> from commercemm_hf import CommerceMMImageProcessor
        >>> processor = CommerceMMImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
        >>> processor(Image.new("RGBA", (120, 80)), return_tensors="pt")["pixel_values"].shape
        torch.Size([1, 3, 64, 64])
    """

    valid_kwargs = CommerceMMImagesKwargs
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
    model_input_names = ["pixel_values"]

    def _to_pil(self, item, index: int, size, fast_jpeg_decode: bool) -> Image.Image:
        where = f"image {index}"
        if isinstance(item, Image.Image):
            return to_rgb_image(item)
        if isinstance(item, (str, os.PathLike, Path)):
            short_edge = size.shortest_edge or min(size.height or 0, size.width or 0) or None
            return to_rgb_image(_open_image_file(item, short_edge, fast_jpeg_decode, where))
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().numpy()
        if isinstance(item, np.ndarray):
            return _array_to_image(item, where).convert("RGB")
        raise ValueError(
            f"{where}: unsupported type {type(item).__name__}; give a PIL image, a numpy array, a torch tensor or a path."
        )

    @staticmethod
    def _resized_size(image: Image.Image, size) -> tuple[int, int]:
        width, height = image.size
        if size.shortest_edge:
            # as transformers' get_resize_output_image_size: the long side is floored
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = size.shortest_edge, max(1, int(size.shortest_edge * long / short))
            return (new_short, new_long) if width <= height else (new_long, new_short)
        if size.height and size.width:
            return size.width, size.height
        raise ValueError(f"size must give shortest_edge, or height and width; got {dict(size)}.")

    def _resize_and_crop(self, image: Image.Image, size, crop_size, resample, do_resize, do_center_crop):
        width, height = image.size
        resized = self._resized_size(image, size) if do_resize else (width, height)
        if not do_center_crop:
            return image.resize(resized, resample=resample) if resized != (width, height) else image
        left = (resized[0] - crop_size.width) // 2
        top = (resized[1] - crop_size.height) // 2
        if resized[0] * resized[1] <= 16 * crop_size.width * crop_size.height:
            if resized != (width, height):
                image = image.resize(resized, resample=resample)
            # PIL fills any part of the box outside the image with black, as transformers' center_crop pads zeros
            return image.crop((left, top, left + crop_size.width, top + crop_size.height))
        # Extreme aspect ratios (say 1 x 5000): resizing all of it would allocate a huge image only to crop it.
        # Resample just the source region the crop keeps (same filter and scale, so the same pixels).
        scale_x, scale_y = width / resized[0], height / resized[1]
        box = (left * scale_x, top * scale_y, (left + crop_size.width) * scale_x, (top + crop_size.height) * scale_y)
        return image.resize((crop_size.width, crop_size.height), resample=resample, box=box)

    def _preprocess_image_like_inputs(self, images, *args, do_resize=True, size=None, resample=None,
                                      do_center_crop=True, crop_size=None, do_rescale=True, rescale_factor=1 / 255,
                                      do_normalize=True, image_mean=None, image_std=None, return_tensors=None,
                                      fast_jpeg_decode=False, **kwargs) -> BatchFeature:
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("No images given: the list is empty.")
            items = list(images)
        else:
            items = [images]
        resample = PILImageResampling(resample if resample is not None else self.resample)
        prepared = []
        for index, item in enumerate(items):
            image = self._to_pil(item, index, size, bool(fast_jpeg_decode))
            if do_resize or do_center_crop:
                image = self._resize_and_crop(image, size, crop_size, resample, do_resize, do_center_crop)
            prepared.append(np.asarray(image, dtype=np.uint8))
        shapes = {array.shape for array in prepared}
        if len(shapes) > 1:
            raise ValueError(f"Images of different sizes {sorted(shapes)} cannot be batched: enable do_center_crop.")
        pixels = torch.from_numpy(np.stack(prepared)).float()  # (batch, height, width, 3)
        # rescale and normalise in one fused multiply-add over the whole batch
        scale = torch.full((3,), float(rescale_factor) if do_rescale else 1.0)
        shift = torch.zeros(3)
        if do_normalize:
            mean, std = torch.tensor(image_mean, dtype=torch.float32), torch.tensor(image_std, dtype=torch.float32)
            scale, shift = scale / std, -mean / std
        pixel_values = torch.addcmul(shift, pixels, scale).permute(0, 3, 1, 2).contiguous()
        if return_tensors in ("np", "numpy"):
            return BatchFeature({"pixel_values": pixel_values.numpy()})
        if return_tensors is None:
            return BatchFeature({"pixel_values": list(pixel_values.numpy())})
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=return_tensors)


__all__ = ["CommerceMMImageProcessor", "to_rgb_image"]
