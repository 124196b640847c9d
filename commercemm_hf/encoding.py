"""`CommerceMMEncoder.encode(...)`: embeddings of texts, images and products in sentence-transformers' shape.

One call embeds a list that mixes kinds: a `str` is a text (as in sentence-transformers: a path must be given as a
`pathlib.Path` or inside a dict to be read as an image); a PIL image, a `pathlib.Path` or a numpy array
(height x width x channels, uint8) is an image; a dict with `"image"` and/or `"text"` is a product (or a tagged
post). Each item gets its multimodal embedding when it has both, else the one it has, all in the same
`projection_dim` space; `output_value=` asks for one kind instead. The item handling is the pipelines' own
(`pipelines/pipeline_commercemm_inputs.py`): an unreadable image is a ValueError naming the item and the path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .pipelines.pipeline_commercemm_inputs import base_model, collate, embed_rows, encode_item, normalize_item


OUTPUT_VALUES = ("preferred", "text", "image", "multimodal")


def _item(value, where: str) -> dict:
    """Normalise one encode() input: Path and numpy images become PIL images, then the pipelines' rules apply."""
    if isinstance(value, Path):
        value = {"image": str(value)}
    elif isinstance(value, np.ndarray):
        value = _array_image(value, where)
    elif isinstance(value, dict) and isinstance(value.get("image"), (Path, np.ndarray)):
        image = value["image"]
        value = {**value, "image": str(image) if isinstance(image, Path) else _array_image(image, where)}
    return normalize_item(value, where)


def _array_image(array: np.ndarray, where: str) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"{where}: a numpy image must be (height, width) or (height, width, 1|3|4), got shape "
                         f"{array.shape}.")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and 0.0 <= array.min() and array.max() <= 1.0:
            array = np.round(array * 255.0)  # floats in [0, 1]
        elif not (array.size and 0 <= array.min() and array.max() <= 255):
            raise ValueError(f"{where}: numpy image values must be uint8, or floats in [0, 1]; got {array.dtype} "
                             f"in [{array.min()}, {array.max()}].")
        array = array.astype(np.uint8)
    return Image.fromarray(array)


class CommerceMMEncoder:
    """A CommerceMM model and its processor with a sentence-transformers-style `encode`.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> from commercemm_hf import CommerceMMConfig, CommerceMMModel, CommerceMMEncoder
        >>> from commercemm_hf import CommerceMMImageProcessor, CommerceMMProcessor, train_commercemm_tokenizer
        >>> tokenizer = train_commercemm_tokenizer(["red ceramic mug", "blue cotton shirt"] * 10, vocab_size=300)
        >>> config = CommerceMMConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)})
        >>> image_processor = CommerceMMImageProcessor(size={"shortest_edge": 64},
        ...                                            crop_size={"height": 64, "width": 64})
        >>> encoder = CommerceMMEncoder(CommerceMMModel(config), CommerceMMProcessor(image_processor, tokenizer))
        >>> embeddings = encoder.encode(["red mug", Image.new("RGB", (80, 60), "red"),
        ...                              {"image": Image.new("RGB", (80, 60), "blue"), "text": "blue shirt"}])
        >>> embeddings.shape, round(float((embeddings ** 2).sum(axis=1)[0]), 4)
        ((3, 128), 1.0)
    """

    def __init__(self, model, processor, device: str | torch.device | None = None):
        self.model = base_model(model).eval()
        if device is not None:
            self.model.to(device)
        self.processor = processor

    @classmethod
    def from_pretrained(cls, name_or_path, device: str | torch.device | None = None, **kwargs) -> CommerceMMEncoder:
        """Load the model (`AutoModel`) and processor (`AutoProcessor`) of a saved folder or Hub id."""
        from transformers import AutoModel, AutoProcessor

        from .factory import check_model_folder

        if not kwargs.get("subfolder"):
            check_model_folder(str(name_or_path))  # a broken folder named, not a TypeError from transformers
        return cls(AutoModel.from_pretrained(name_or_path, **kwargs),
                   AutoProcessor.from_pretrained(name_or_path, **kwargs), device=device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, inputs, batch_size: int = 32, normalize_embeddings: bool = True, convert_to_numpy: bool = True,
               convert_to_tensor: bool = False, show_progress_bar: bool | None = None,
               output_value: str = "preferred", **depths):
        """Embed one input or a list of inputs (texts, images, `{"image", "text"}` products), `batch_size` at a time.

        Returns a `(len(inputs), projection_dim)` numpy array (a torch tensor with `convert_to_tensor=True` or
        `convert_to_numpy=False`; one vector for a single input), L2-normalised unless `normalize_embeddings=False`.
        `output_value` is `"preferred"` (multimodal for items with both, else the one they have), or `"text"`,
        `"image"`, `"multimodal"` (every item must then have that kind). `text_depth=` / `image_depth=` /
        `multimodal_depth=` run fewer layers. A progress bar shows for more than one batch unless
        `show_progress_bar=False`.
        """
        if output_value not in OUTPUT_VALUES:
            raise ValueError(f"output_value must be one of {OUTPUT_VALUES}, got {output_value!r}.")
        unknown = sorted(set(depths) - {"text_depth", "image_depth", "multimodal_depth"})
        if unknown:
            raise TypeError(f"encode() got unexpected arguments {unknown}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        single = isinstance(inputs, (str, dict, Path, np.ndarray, Image.Image))
        items = [inputs] if single else list(inputs)
        items = [_item(value, f"item {index}") for index, value in enumerate(items)]
        tokenizer, config = self.processor.tokenizer, self.model.config
        batches = range(0, len(items), batch_size)
        if show_progress_bar is None:
            show_progress_bar = len(batches) > 1
        from tqdm.auto import tqdm

        parts = []
        for start in tqdm(batches, desc="Embedding", unit="batch", disable=not show_progress_bar):
            chunk = items[start:start + batch_size]
            encoded = [encode_item(item, tokenizer, self.processor.image_processor, config) for item in chunk]
            batch = {key: value.to(self.device) for key, value in collate(encoded, tokenizer.pad_token_id).items()}
            embeddings = embed_rows(self.model, batch, depths, normalize=normalize_embeddings)[output_value]
            lacking = torch.isnan(embeddings).any(dim=1).nonzero()[:, 0].tolist()
            if lacking:
                needs = "an image and a text" if output_value == "multimodal" else "a " + output_value
                raise ValueError(f"items {[start + row for row in lacking]} have no {output_value} embedding (each "
                                 f"needs {needs}).")
            parts.append(embeddings)
        result = torch.cat(parts) if parts else torch.zeros(0, config.projection_dim)
        result = result[0] if single else result
        return result.cpu().numpy() if convert_to_numpy and not convert_to_tensor else result


__all__ = ["CommerceMMEncoder"]
