"""Input handling shared by the CommerceMM pipelines: one item is an image, a text, or both.

Accepted items: a `str` (a text), a PIL image, or a dict with `"image"` (PIL image, path or URL) and/or `"text"`.
Every item becomes the same tensors (`input_ids`, `attention_mask`, `pixel_values`, `has_text`, `has_image`) so
that transformers' pipeline batching (`batch_size=`) can stack items of different kinds; the model then runs each
encoder only on the rows that have its modality.

This file travels as Hugging Face remote code: transformers, torch and PIL only.
"""

import torch
from PIL import Image
from torch.nn import functional as F
from transformers.image_utils import load_image


DEPTH_ARGUMENTS = ("text_depth", "image_depth", "fusion_depth")


def split_depths(kwargs: dict) -> dict:
    """Pop the active depths (modality randomization) from pipeline keyword arguments."""
    return {name: kwargs.pop(name) for name in DEPTH_ARGUMENTS if name in kwargs}


def normalize_item(item) -> dict:
    """`{"image": PIL image or None, "text": str or None}` for one pipeline input, or a ValueError naming the issue."""
    if isinstance(item, str):
        return {"image": None, "text": item}
    if isinstance(item, Image.Image):
        return {"image": item, "text": None}
    if isinstance(item, dict):
        unknown = sorted(set(item) - {"image", "text", "id", "product_id"})
        if unknown:
            raise ValueError(f"Unknown keys {unknown} in a pipeline input; use 'image' and/or 'text'.")
        image, text = item.get("image"), item.get("text")
        if image is not None and not isinstance(image, Image.Image):
            if not isinstance(image, str):
                raise ValueError(f"'image' must be a PIL image, a path or a URL, got {type(image).__name__}.")
            image = load_image(image)
        if text is not None and not isinstance(text, str):
            raise ValueError(f"'text' must be a string, got {type(text).__name__}.")
        if image is None and text is None:
            raise ValueError("A pipeline input needs an image, a text, or both; got neither.")
        return {"image": image, "text": text}
    raise ValueError(
        f"Cannot read a pipeline input of type {type(item).__name__}: give a text (str), a PIL image, or a dict "
        "with 'image' and/or 'text'."
    )


def encode_item(item: dict, tokenizer, image_processor, config) -> dict:
    """Tensors for one normalised item (batch of one); a missing modality gets placeholder values and a flag."""
    text = item["text"]
    max_length = min(tokenizer.model_max_length, config.text_config.max_text_length)
    tokens = tokenizer(text if text is not None else "", truncation=True, max_length=max_length, return_tensors="pt")
    if item["image"] is not None:
        pixel_values = image_processor(item["image"], return_tensors="pt")["pixel_values"]
    else:
        size = config.vision_config.image_size
        pixel_values = torch.zeros(1, config.vision_config.num_channels, size, size)
    return {
        "input_ids": tokens["input_ids"],
        "attention_mask": tokens["attention_mask"],
        "pixel_values": pixel_values,
        "has_text": torch.tensor([text is not None]),
        "has_image": torch.tensor([item["image"] is not None]),
    }


def embed_rows(model, inputs: dict, depths: dict) -> dict[str, torch.Tensor]:
    """L2-normalised text / image / multimodal embeddings of a batch, NaN on rows lacking the modality, plus
    `"preferred"`: multimodal where both are given, else the one present."""
    has_text, has_image = inputs["has_text"].bool(), inputs["has_image"].bool()
    batch_size = has_text.shape[0]
    dim = model.config.projection_dim
    device = inputs["input_ids"].device
    out = {kind: torch.full((batch_size, dim), float("nan"), device=device) for kind in ("text", "image", "multimodal")}
    text_rows, image_rows, both_rows = has_text.nonzero()[:, 0], has_image.nonzero()[:, 0], (has_text & has_image).nonzero()[:, 0]
    if len(text_rows):
        ids, mask = _trim(inputs["input_ids"][text_rows], inputs["attention_mask"][text_rows])
        features = model.get_text_features(ids, mask, text_depth=depths.get("text_depth"))
        out["text"][text_rows] = F.normalize(features.pooler_output.float(), dim=-1)
    if len(image_rows):
        features = model.get_image_features(inputs["pixel_values"][image_rows], image_depth=depths.get("image_depth"))
        out["image"][image_rows] = F.normalize(features.pooler_output.float(), dim=-1)
    if len(both_rows):
        ids, mask = _trim(inputs["input_ids"][both_rows], inputs["attention_mask"][both_rows])
        features = model.get_multimodal_features(ids, inputs["pixel_values"][both_rows], mask, **depths)
        out["multimodal"][both_rows] = F.normalize(features.pooler_output.float(), dim=-1)
    preferred = torch.where(has_text[:, None], out["text"], out["image"])
    out["preferred"] = torch.where((has_text & has_image)[:, None], out["multimodal"], preferred)
    return out


def _trim(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop padding columns no row of this sub-batch uses."""
    length = max(int(attention_mask.sum(dim=1).max()), 1)
    return input_ids[:, :length], attention_mask[:, :length]


def base_model(model):
    """The `CommerceMMModel` inside a head model (or the model itself)."""
    return getattr(model, "commercemm", model)


def collate(encoded: list[dict], pad_token_id: int) -> dict:
    """Stack `encode_item` outputs into one batch, right-padding the token ids."""
    length = max(item["input_ids"].shape[1] for item in encoded)
    input_ids = torch.full((len(encoded), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, item in enumerate(encoded):
        size = item["input_ids"].shape[1]
        input_ids[row, :size] = item["input_ids"][0]
        attention_mask[row, :size] = item["attention_mask"][0]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": torch.cat([item["pixel_values"] for item in encoded]),
        "has_text": torch.cat([item["has_text"] for item in encoded]),
        "has_image": torch.cat([item["has_image"] for item in encoded]),
    }
