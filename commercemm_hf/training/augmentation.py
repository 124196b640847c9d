"""Image augmentation for fine-tuning and pretraining collators, without torchvision: the usual contrastive recipe
(random resized crop, horizontal flip, colour jitter) on PIL images, before the processor resizes and normalises.

Why in the collator: every epoch then sees other crops of the same few product photos (what makes small catalogs
learnable), the processor stays deterministic (a saved model's preprocessing is unchanged), and evaluation batches
are built without it (`for_evaluation()` of a collator drops it).

Draws come from one `numpy` generator seeded at construction: the same seed gives the same crops in the same order.

Example:
    >>> from PIL import Image
    >>> augment = ImageAugmentation(seed=0)
    >>> augment(Image.new("RGB", (80, 60), "red")).size
    (80, 60)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageEnhance


@dataclass
class ImageAugmentation:
    """Random resized crop (area share in `scale`, aspect ratio in `ratio`, resized back to the input size),
    horizontal flip with probability `flip`, and colour jitter: brightness, contrast and saturation each scaled by a
    factor drawn from [1 - jitter, 1 + jitter]. `scale=(1, 1)`, `flip=0` and `jitter=0` leave an image as it is.

    Example:
        >>> from PIL import Image
        >>> image = Image.new("RGB", (32, 32), (200, 30, 30))
        >>> a, b = ImageAugmentation(seed=1), ImageAugmentation(seed=1)
        >>> a(image).tobytes() == b(image).tobytes()
        True
    """

    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    jitter: float = 0.4
    seed: int | None = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self):
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}.")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip is a probability in [0, 1], got {self.flip}.")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}.")
        self.rng = np.random.default_rng(self.seed)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """A random `(left, top, right, bottom)` box as torchvision's RandomResizedCrop draws it (10 tries, then
        the whole image)."""
        area = width * height
        for _ in range(10):
            target = area * self.rng.uniform(*self.scale)
            aspect = math.exp(self.rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left = int(self.rng.integers(0, width - w + 1))
                top = int(self.rng.integers(0, height - h + 1))
                return left, top, left + w, top + h
        return 0, 0, width, height

    def __call__(self, image: Image.Image) -> Image.Image:
        image = image.convert("RGB")
        size = image.size
        if self.scale != (1.0, 1.0):
            image = image.resize(size, Image.Resampling.BILINEAR, box=self.crop_box(*size))
        if self.flip and self.rng.random() < self.flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.jitter:
            # a random order of the three, as the usual ColorJitter does
            for which in self.rng.permutation(3):
                factor = float(self.rng.uniform(1 - self.jitter, 1 + self.jitter))
                enhancer = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)[which]
                image = enhancer(image).enhance(factor)
        return image

    def images(self, images):
        """Augment a list of images (None stays None: a row without that image)."""
        return None if images is None else [None if image is None else self(image) for image in images]


def augmentation_from_flags(augment: bool, scale_min: float = 0.5, flip: float = 0.5, jitter: float = 0.4,
                            seed: int | None = 0) -> ImageAugmentation | None:
    """The `--augment` flags of the example scripts as an `ImageAugmentation`, or None when off.

    Example:
        >>> augmentation_from_flags(False) is None
        True
        >>> augmentation_from_flags(True, scale_min=0.3).scale
        (0.3, 1.0)
    """
    if not augment:
        return None
    return ImageAugmentation(scale=(scale_min, 1.0), flip=flip, jitter=jitter, seed=seed)


__all__ = ["ImageAugmentation", "augmentation_from_flags"]
