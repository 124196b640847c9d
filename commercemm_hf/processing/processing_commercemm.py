"""CommerceMM processor: the image processor and a tokenizer behind one call.

This file travels as Hugging Face remote code: it imports transformers and single-dot siblings only.
"""

from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack

from .image_processing_commercemm import CommerceMMImageProcessor, CommerceMMImageProcessorKwargs


class CommerceMMProcessorKwargs(ProcessingKwargs, total=False):
    """Per-modality kwargs; `images_kwargs` adds `fast_jpeg_decode` and `reducing_gap`.

    The defaults rank below what the saved tokenizer says (`tokenizer_config.json`: a tokenizer saved with
    `padding="max_length"` keeps padding so) and below the call's own arguments, as in every transformers processor.
    """

    images_kwargs: CommerceMMImageProcessorKwargs
    _defaults = {
        "text_kwargs": {"padding": True, "truncation": True, "return_token_type_ids": False},
        "common_kwargs": {"return_tensors": "pt"},
    }


def _text_list(text) -> list[str]:
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, (list, tuple)) or not texts:
        raise ValueError(
            f"text must be a string or a non-empty list of strings, got {type(text).__name__}"
            + (" (empty)." if isinstance(texts, (list, tuple)) else ".")
        )
    bad = [index for index, item in enumerate(texts) if not isinstance(item, str)]
    if bad:
        raise ValueError(
            f"text items {bad[:10]} are not strings (item {bad[0]} is {type(texts[bad[0]]).__name__}); "
            "give '' for a missing text."
        )
    return list(texts)


class CommerceMMProcessor(ProcessorMixin):
    r"""Prepares images, texts or both for CommerceMM: `pixel_values`, `input_ids`, `attention_mask`.

    Wraps a `CommerceMMImageProcessor` (the default when `image_processor` is None) and any transformers tokenizer
    with [CLS]/[SEP]/[PAD] tokens: one trained by `train_commercemm_tokenizer`, or an imported BERT / XLM-R one.

    Calling it:
    * `images`: one image or a list (anything `CommerceMMImageProcessor` takes); `text`: a string or a list of
      strings. Either, or both; the two batches may differ in size (the CLIP-style forward scores every image
      against every text).
    * Texts are padded to the longest (`padding=True`) and truncated to `max_length`, by default the tokenizer's
      `model_max_length`, so a very long description never overflows the model; `''` gives `[CLS] [SEP]`. What the
      saved tokenizer's config says (e.g. `padding="max_length"`, `max_length=...`) wins over these defaults.
    * `token_type_ids` are left out (CommerceMM reads one segment) unless `return_token_type_ids=True`.
    * Other keyword arguments go to the image processor or the tokenizer, whichever takes them, or per modality
      with `images_kwargs={...}` / `text_kwargs={...}`; giving one both ways is a `ValueError`, as in transformers.
    * A `ValueError` names the problem: no input, text that is not a string or a list of strings, a bad image.

    `save_pretrained` writes `processor_config.json` and the tokenizer files; `from_pretrained` (or
    `AutoProcessor`) loads them back.

    Example:
        >>> from PIL import Image
        >>> from commercemm_hf import CommerceMMImageProcessor, CommerceMMProcessor, train_commercemm_tokenizer
        >>> tokenizer = train_commercemm_tokenizer(["red mug", "blue lamp"] * 5, vocab_size=300, model_max_length=32)
        >>> processor = CommerceMMProcessor(CommerceMMImageProcessor(size={"shortest_edge": 64},
        ...                                 crop_size={"height": 64, "width": 64}), tokenizer)
        >>> batch = processor(images=[Image.new("RGB", (90, 60))], text=["red mug", "a blue lamp"])
        >>> batch["pixel_values"].shape, batch["input_ids"].shape[0], sorted(batch)
        (torch.Size([1, 3, 64, 64]), 2, ['attention_mask', 'input_ids', 'pixel_values'])
    """

    valid_processor_kwargs = CommerceMMProcessorKwargs

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        if image_processor is None:
            image_processor = CommerceMMImageProcessor()
        if tokenizer is None:
            raise ValueError(
                "CommerceMMProcessor needs a tokenizer: train one with train_commercemm_tokenizer(texts) or pass any "
                "transformers tokenizer with [CLS]/[SEP]/[PAD] tokens."
            )
        super().__init__(image_processor, tokenizer)

    @classmethod
    def from_model_config(cls, config, tokenizer, **image_processor_kwargs) -> "CommerceMMProcessor":
        """The processor that fits `config` (a `CommerceMMConfig`): images resized (shortest edge) and center-cropped
        to its `vision_config.image_size`; a model with `num_channels != 3` keeps the images' own channels
        (`do_convert_rgb=False`). `image_processor_kwargs` override the rest (mean, std, resample, ...).

        Example:
            >>> from commercemm_hf import CommerceMMConfig, CommerceMMProcessor, train_commercemm_tokenizer
            >>> tokenizer = train_commercemm_tokenizer(["red mug", "blue lamp"] * 5, vocab_size=300)
            >>> config = CommerceMMConfig.from_preset("tiny", vision_config={"image_size": 48})
            >>> processor = CommerceMMProcessor.from_model_config(config, tokenizer)
            >>> processor.image_processor.crop_size["height"], processor.image_processor.size["shortest_edge"]
            (48, 48)
        """
        size = config.vision_config.image_size
        options = {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}
        if getattr(config.vision_config, "num_channels", 3) != 3:
            options["do_convert_rgb"] = False
        return cls(CommerceMMImageProcessor(**{**options, **image_processor_kwargs}), tokenizer)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]

    def __call__(self, images=None, text=None, **kwargs: Unpack[CommerceMMProcessorKwargs]) -> BatchFeature:
        if images is None and text is None:
            raise ValueError("CommerceMMProcessor needs images, text, or both; got neither.")
        texts = _text_list(text) if text is not None else None
        merged = self._merge_kwargs(
            CommerceMMProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        data = {}
        if texts is not None:
            data.update(self.tokenizer(texts, **merged["text_kwargs"]))
        if images is not None:
            data.update(self.image_processor(images, **merged["images_kwargs"]))
        return BatchFeature(data=data, tensor_type=merged["text_kwargs"].get("return_tensors"))


__all__ = ["CommerceMMProcessor"]
