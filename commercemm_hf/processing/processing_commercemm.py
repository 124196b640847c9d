"""CommerceMM processor: the image processor and a tokenizer behind one call.

This file travels as Hugging Face remote code: transformers and single-dot siblings only.
"""

from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin


class CommerceMMProcessor(ProcessorMixin):
    r"""Prepares images, texts or both for CommerceMM: `pixel_values`, `input_ids`, `attention_mask`.

    Texts are truncated to the tokenizer's `model_max_length` by default, so a very long description never breaks
    the model; an empty text becomes `[CLS] [SEP]`. `token_type_ids` are dropped unless `return_token_type_ids=True`
    (CommerceMM reads one segment). Images and texts may be batches of different sizes (the CLIP-style forward
    scores every image against every text).

    Example:
        >>> from PIL import Image
        >>> from commercemm_hf import CommerceMMImageProcessor, CommerceMMProcessor, train_commercemm_tokenizer
        >>> tokenizer = train_commercemm_tokenizer(["red mug", "blue lamp"] * 5, vocab_size=100, model_max_length=32)
        >>> processor = CommerceMMProcessor(CommerceMMImageProcessor(size={"shortest_edge": 64},
        ...                                 crop_size={"height": 64, "width": 64}), tokenizer)
        >>> batch = processor(images=[Image.new("RGB", (90, 60))], text=["red mug"], return_tensors="pt")
        >>> sorted(batch.keys())
        ['attention_mask', 'input_ids', 'pixel_values']
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]

    def __call__(self, images=None, text=None, padding=True, truncation=True, max_length=None, return_tensors="pt",
                 return_token_type_ids: bool = False, **kwargs) -> BatchFeature:
        if images is None and text is None:
            raise ValueError("CommerceMMProcessor needs images, text, or both; got neither.")
        data = {}
        if text is not None:
            texts = [text] if isinstance(text, str) else text
            if not isinstance(texts, (list, tuple)) or not texts:
                raise ValueError(f"text must be a string or a non-empty list of strings, got {type(text).__name__}.")
            bad = [i for i, item in enumerate(texts) if not isinstance(item, str)]
            if bad:
                raise ValueError(
                    f"text items {bad[:10]} are not strings (got {type(texts[bad[0]]).__name__}); give '' for no text."
                )
            encoded = self.tokenizer(
                list(texts), padding=padding, truncation=truncation,
                max_length=max_length if max_length is not None else self.tokenizer.model_max_length,
                return_tensors=return_tensors, return_token_type_ids=return_token_type_ids, **kwargs,
            )
            data.update(encoded)
        if images is not None:
            data["pixel_values"] = self.image_processor(images, return_tensors=return_tensors)["pixel_values"]
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = ["CommerceMMProcessor"]
