"""Input processing for CommerceMM: the image processor, the processor, and offline tokenizer training."""

from .image_processing_commercemm import CommerceMMImageProcessor, array_to_rgb_image, to_rgb_image
from .processing_commercemm import CommerceMMProcessor
from .tokenization_commercemm import SPECIAL_TOKENS, train_commercemm_tokenizer


__all__ = [
    "SPECIAL_TOKENS",
    "CommerceMMImageProcessor",
    "CommerceMMProcessor",
    "array_to_rgb_image",
    "to_rgb_image",
    "train_commercemm_tokenizer",
]
