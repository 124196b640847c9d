"""Input handling shared by the CommerceMM pipelines: one item is an image, a text, or both.

Accepted items: a `str` (a text), a PIL image, or a dict with `"image"` (PIL image, path or URL) and/or `"text"`.
Every item becomes the same tensors (`input_ids`, `attention_mask`, `pixel_values`, `has_text`, `has_image`) so
that transformers' pipeline batching (`batch_size=`) can stack items of different kinds; the model then runs each
encoder only on the rows that have its modality.

An image that cannot be read (missing file, truncated or corrupt data, unreachable URL) is a `ValueError` naming the
item and the path. Each call warns once, with counts and item indices, about texts the model sees differently from
what was given: empty or whitespace-only texts, and texts longer than the model reads (truncated); a head whose
config records `expected_modalities` also warns about inputs lacking one of them.

This file travels as Hugging Face remote code: transformers, torch and PIL only.
"""

import numbers
import os
import warnings

import torch
from PIL import Image
from torch.nn import functional as F
from transformers.image_utils import load_image
from transformers.utils import logging


logger = logging.get_logger(__name__)

DEPTH_ARGUMENTS = ("text_depth", "image_depth", "multimodal_depth")
#: What `index_products(..., on_bad_items=...)` does with an item it cannot embed (the data loaders' `on_bad_rows`
#: words): skip it (warn, count, keep its index and reason) or raise a ValueError naming it.
ON_BAD_ITEMS = ("skip", "raise")
#: How many item indices a warning lists before "..."
SHOWN_INDICES = 10
#: Texts tokenized at once when counting truncated texts (bounds memory on large catalogs)
TOKENIZE_CHUNK = 1024
#: The modalities each kind of product index needs
INDEX_NEEDS = {"multimodal": ("image", "text"), "image": ("image",), "text": ("text",)}


def split_depths(kwargs: dict) -> dict:
    """Pop the active depths (modality randomization) from pipeline keyword arguments; the old name `fusion_depth`
    of `multimodal_depth` still works, with a FutureWarning.

    Example:
        >>> split_depths({"text_depth": 2, "batch_size": 8})
        {'text_depth': 2}
    """
    if "fusion_depth" in kwargs:
        warnings.warn("`fusion_depth` is now called `multimodal_depth`; the old name will stop working in a future "
                      "version.", FutureWarning, stacklevel=3)
        old = kwargs.pop("fusion_depth")
        if kwargs.setdefault("multimodal_depth", old) != old:
            raise ValueError(f"Got multimodal_depth={kwargs['multimodal_depth']} and its old name fusion_depth={old}: "
                             "give one.")
    return {name: kwargs.pop(name) for name in DEPTH_ARGUMENTS if name in kwargs}


def checked_top_k(top_k) -> int:
    """`top_k` as an int (numpy integers included); a ValueError naming it unless it is a positive integer (`True`
    is not 1 here, nor `2.0` two).

    Example:
        >>> checked_top_k(0)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: top_k must be a positive integer, got 0.
    """
    if not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
    return int(top_k)


def _shown(value: str, limit: int = 120) -> str:
    return value if len(value) <= limit else value[:limit] + f"... ({len(value)} characters)"


def read_image(image, where: str = "the input") -> Image.Image:
    """A decoded PIL image from a PIL image, a local path, a URL or base64 data; a `ValueError` naming `where` (the
    item) and the path when it cannot be read. Decoding happens here, so a truncated or corrupt file fails with its
    name instead of deep inside the image processor.

    Example:
        >>> read_image("no/such/mug.jpg", "item 3")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: item 3: cannot read the image 'no/such/mug.jpg': no such file (nor a URL or base64 image data)
    """
    if isinstance(image, str):
        name = _shown(image)
        if not image.startswith(("http://", "https://")) and not os.path.isfile(image):
            try:  # transformers' load_image also takes base64 data
                image = load_image(image)
            except Exception:
                raise ValueError(f"{where}: cannot read the image {name!r}: no such file (nor a URL or base64 image "
                                 "data)") from None
    else:
        name = getattr(image, "filename", "") or "(an in-memory PIL image)"
    try:
        if isinstance(image, str):
            image = load_image(image)
        image.load()
    except Exception as error:
        raise ValueError(f"{where}: cannot read the image {name!r}: {type(error).__name__}: {error}") from error
    if 0 in image.size:  # caught here, a bad product is skipped and named instead of failing the whole batch
        raise ValueError(f"{where}: the image {name!r} is empty ({image.width}x{image.height} pixels).")
    return image


def check_item(item, where: str = "the input") -> None:
    """A ValueError naming `where` and the issue when `item` is not a pipeline input (a text, a PIL image, or a dict
    with `"image"` (PIL image, path or URL) and/or `"text"`); checks types only, reads no image.

    Example:
        >>> check_item({"text": 5}, "item 2")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: item 2: 'text' must be a string, got int.
    """
    if isinstance(item, (str, Image.Image)):
        return
    if not isinstance(item, dict):
        raise ValueError(f"{where}: cannot read a pipeline input of type {type(item).__name__}: give a text (str), a "
                         "PIL image, or a dict with 'image' and/or 'text'.")
    unknown = sorted(set(item) - {"image", "text", "id", "product_id"}, key=str)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} in a pipeline input; use 'image' and/or 'text'.")
    image, text = item.get("image"), item.get("text")
    if image is not None and not isinstance(image, (str, os.PathLike, Image.Image)):
        raise ValueError(f"{where}: 'image' must be a PIL image, a path or a URL, got {type(image).__name__}.")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{where}: 'text' must be a string, got {type(text).__name__}.")
    if image is None and text is None:
        raise ValueError(f"{where}: a pipeline input needs an image, a text, or both; got neither.")


def check_call_inputs(inputs) -> None:
    """Check each item of a pipeline call's list by position ("item 3: ..."), before transformers' per-item
    preprocessing, which cannot say which item of the list failed."""
    if isinstance(inputs, list):
        for index, item in enumerate(inputs):
            check_item(item, f"item {index}")


def product_list(products) -> list:
    """`products` as a list; a TypeError for a single item (a text would otherwise be indexed letter by letter)."""
    if isinstance(products, (str, bytes, dict, Image.Image)) or not hasattr(products, "__iter__"):
        raise TypeError(f"products must be a list of items (texts, PIL images or dicts with 'image' and/or 'text'), "
                        f"got a single {type(products).__name__}: wrap it in a list.")
    return list(products)


def normalize_item(item, where: str = "the input") -> dict:
    """`{"image": decoded PIL image or None, "text": str or None}` for one pipeline input, or a ValueError naming
    `where` (e.g. "item 3") and the issue."""
    check_item(item, where)
    if isinstance(item, str):
        return {"image": None, "text": item}
    if isinstance(item, Image.Image):
        return {"image": read_image(item, where), "text": None}
    image = item.get("image")
    if isinstance(image, os.PathLike):  # a pathlib.Path is a path too
        image = os.fspath(image)
    return {"image": None if image is None else read_image(image, where), "text": item.get("text")}


def text_max_length(tokenizer, config) -> int:
    """How many tokens of a text the model reads (the rest is truncated)."""
    return min(tokenizer.model_max_length, config.text_config.max_text_length)


def _indices(indices: list[int]) -> str:
    return str(indices[:SHOWN_INDICES])[:-1] + (", ...]" if len(indices) > SHOWN_INDICES else "]")


def _raw_parts(item) -> tuple[object, object]:
    """(text, image) of a raw pipeline input without loading anything."""
    if isinstance(item, dict):
        return item.get("text"), item.get("image")
    if isinstance(item, str):
        return item, None
    return None, item


def warn_about_inputs(items: list, tokenizer, config, what: str = "inputs") -> dict:
    """Warn once (for this list of raw or normalised inputs) about texts the model sees differently from what was
    given, and inputs lacking a modality a head was trained on (`config.expected_modalities`). Returns the counts:
    `{"empty_texts": [indices], "truncated_texts": [indices], "missing_modalities": {modality: [indices]}}`.

    Example:
        >>> from commercemm_hf import create_model_and_processor
        >>> from commercemm_hf.pipelines.pipeline_commercemm_inputs import warn_about_inputs
        >>> model, processor = create_model_and_processor("tiny", texts=["red mug", "blue lamp"] * 5, vocab_size=300)
        >>> long_description = "red ceramic mug " * 50  # over the 64 tokens the model reads
        >>> warn_about_inputs(["red mug", "  ", long_description], processor.tokenizer, model.config)
        {'empty_texts': [1], 'truncated_texts': [2], 'missing_modalities': {}}

        and logs, at WARNING: "1 of 3 texts of these 3 inputs are empty or whitespace only (items [1]): ..." and
        "1 of 3 texts of these 3 inputs are longer than the 64 tokens the model reads and were truncated ...".
    """
    texts = {index: text for index, item in enumerate(items)
             for text in [_raw_parts(item)[0]] if isinstance(text, str)}
    empty = [index for index, text in texts.items() if not text.strip()]
    if empty:
        logger.warning(f"{len(empty)} of {len(texts)} texts of these {len(items)} {what} are empty or whitespace only "
                       f"(items {_indices(empty)}): the model embeds them as an empty text, alike for every item.")
    max_length = text_max_length(tokenizer, config)
    filled = [index for index in texts if index not in empty]
    truncated, longest = [], 0
    for start in range(0, len(filled), TOKENIZE_CHUNK):
        chunk = filled[start:start + TOKENIZE_CHUNK]
        lengths = [len(ids) for ids in tokenizer([texts[index] for index in chunk], truncation=True,
                                                 max_length=max_length)["input_ids"]]
        for index, length in zip(chunk, lengths):
            if length >= max_length:  # at the limit: count the tokens of the whole text
                # verbose=False: no "longer than the maximum" warning, the model never sees the untruncated ids
                full = len(tokenizer(texts[index], verbose=False)["input_ids"])
                if full > max_length:
                    truncated.append(index)
                    longest = max(longest, full)
    if truncated:
        logger.warning(f"{len(truncated)} of {len(texts)} texts of these {len(items)} {what} are longer than the "
                       f"{max_length} tokens the model reads and were truncated to them (items {_indices(truncated)}; "
                       f"the longest has {longest} tokens).")
    missing = {}
    for modality in getattr(config, "expected_modalities", None) or []:
        lacking = [index for index, item in enumerate(items)
                   if _raw_parts(item)[0 if modality == "text" else 1] is None]
        if lacking:
            missing[modality] = lacking
            logger.warning(f"This head was trained on {' + '.join(config.expected_modalities)} inputs, but "
                           f"{len(lacking)} of these {len(items)} {what} have no {modality} (items "
                           f"{_indices(lacking)}): expect less accurate results on them.")
    return {"empty_texts": empty, "truncated_texts": truncated, "missing_modalities": missing}


def default_product_ids(products: list, product_ids: list | None, start: int = 0) -> list[str]:
    """`product_ids`, else each item's `"product_id"` / `"id"`, else positions `start`, `start + 1`, ..."""
    if product_ids is None:
        product_ids = [item.get("product_id", item.get("id")) if isinstance(item, dict) else None for item in products]
        if any(product_id is None for product_id in product_ids):
            product_ids = [str(start + i) for i in range(len(products))]
    if isinstance(product_ids, (str, bytes)):
        raise TypeError(f"product_ids must be a list of ids, one per product, got a single {type(product_ids).__name__}"
                        f" {_shown(str(product_ids))!r}.")
    product_ids = list(product_ids)
    if len(product_ids) != len(products):
        raise ValueError(f"{len(products)} products but {len(product_ids)} product ids.")
    for index, product_id in enumerate(product_ids):
        # str(None) would silently become the id 'None' (and several products would share it)
        if product_id is None or (isinstance(product_id, str) and not product_id.strip()):
            raise ValueError(f"product_ids[{index}] is {product_id!r}: each product needs a non-empty id.")
        if not isinstance(product_id, (str, numbers.Integral)) or isinstance(product_id, bool):
            raise TypeError(f"product_ids[{index}] is {product_id!r} ({type(product_id).__name__}): ids are strings "
                            "or integers.")
    product_ids = [str(product_id) for product_id in product_ids]
    first = {}
    for index, product_id in enumerate(product_ids):
        if first.setdefault(product_id, index) != index:
            raise ValueError(f"Product id {product_id!r} is given twice (products {first[product_id]} and {index}): "
                             "ids must be unique.")
    return product_ids


def check_products(products: list, product_ids: list[str], product_kind: str, on_bad_items: str = "skip",
                   first_index: int = 0) -> tuple[list[dict], list[str], list[dict]]:
    """`(items, ids, skipped)`: the normalised products that can be embedded into a `product_kind` index with their
    ids, and one `{"index", "product_id", "reason"}` per product that cannot (unreadable or missing image, a
    modality the kind needs); `on_bad_items="raise"` raises the first one's ValueError instead. `first_index` is
    the position of `products[0]` in the caller's list (for the messages).

    Example:
        >>> from PIL import Image
        >>> from commercemm_hf.pipelines.pipeline_commercemm_inputs import check_products
        >>> products = [{"image": "missing.jpg", "text": "mug"}, "blue lamp",
        ...             {"image": Image.new("RGB", (64, 64), "red"), "text": "red mug"}]
        >>> items, ids, skipped = check_products(products, ["p1", "p2", "p3"], "multimodal")
        >>> ids, [item["text"] for item in items]
        (['p3'], ['red mug'])
        >>> for entry in skipped:
        ...     print(entry["index"], entry["product_id"], entry["reason"])
        0 p1 product 0 (id 'p1'): cannot read the image 'missing.jpg': no such file (nor a URL or base64 image data)
        1 p2 product 1 (id 'p2') has no image, which a multimodal index needs.
    """
    if on_bad_items not in ON_BAD_ITEMS:
        raise ValueError(f"on_bad_items must be one of {ON_BAD_ITEMS}, got {on_bad_items!r}.")
    kept, kept_ids, skipped = [], [], []
    for offset, (item, product_id) in enumerate(zip(products, product_ids)):
        where = f"product {first_index + offset} (id {product_id!r})"
        try:
            normalized = normalize_item(item, where)
            lacking = [modality for modality in INDEX_NEEDS[product_kind] if normalized[modality] is None]
            if lacking:
                raise ValueError(f"{where} has no {' and '.join(lacking)}, which a {product_kind} index needs.")
        except ValueError as error:
            if on_bad_items == "raise":
                raise
            skipped.append({"index": first_index + offset, "product_id": product_id, "reason": str(error)})
            continue
        kept.append(normalized)
        kept_ids.append(product_id)
    return kept, kept_ids, skipped


def warn_about_skipped(skipped: list[dict], total: int, what: str = "products") -> None:
    """One warning for the items a call skipped: how many, and the first reasons (each names its item)."""
    if skipped:
        reasons = "; ".join(row["reason"] for row in skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
        logger.warning(f"Skipped {len(skipped)} of {total} {what} that cannot be embedded (items "
                       f"{_indices([row['index'] for row in skipped])}): {reasons}")


class CallInputsMixin:
    """For a pipeline class: an empty list of inputs answers `[]` (transformers' Pipeline raises a bare IndexError),
    and each item of a list is checked by position, so a bad one is named ("item 3: ...")."""

    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, list) and not inputs:
            # still refuse bad arguments, as a non-empty call would
            self._sanitize_parameters(**{key: value for key, value in kwargs.items()
                                         if key not in ("batch_size", "num_workers")})
            return []
        self._check_call_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def _check_call_inputs(self, inputs) -> None:
        check_call_inputs(inputs)


class InputWarningsMixin(CallInputsMixin):
    """For a pipeline class: `warn_about_inputs` once per call on a single input or a list of inputs (generators
    and datasets stream, so they are not scanned ahead), after `CallInputsMixin`'s checks."""

    def _check_call_inputs(self, inputs) -> None:
        super()._check_call_inputs(inputs)  # before the warnings read the items
        if isinstance(inputs, (str, dict, Image.Image, list)):  # a list here is not empty (CallInputsMixin)
            items = inputs if isinstance(inputs, list) else [inputs]
            warn_about_inputs(items, self.tokenizer, self.model.config, "inputs")


def encode_item(item: dict, tokenizer, image_processor, config) -> dict:
    """Tensors for one normalised item (batch of one); a missing modality gets placeholder values and a flag."""
    text = item["text"]
    tokens = tokenizer(text if text is not None else "", truncation=True, max_length=text_max_length(tokenizer, config),
                       return_tensors="pt")
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


def embed_rows(model, inputs: dict, depths: dict, normalize: bool = True) -> dict[str, torch.Tensor]:
    """Text / image / multimodal embeddings of a batch (float32, L2-normalised unless `normalize=False`), NaN on rows
    lacking the modality, plus `"preferred"`: multimodal where both are given, else the one present.

    The embedding itself is `model.get_item_features` (the model's own method, so a model loaded as remote code
    embeds with the code it came with); this only names its outputs as the pipelines read them.

    Example:
        >>> from commercemm_hf import CommerceMMConfig, CommerceMMModel
        >>> model = CommerceMMModel(CommerceMMConfig.from_preset("tiny")).eval()
        >>> batch = {"input_ids": torch.tensor([[2, 7, 3], [2, 0, 0]]),
        ...          "attention_mask": torch.tensor([[1, 1, 1], [1, 0, 0]]), "pixel_values": torch.randn(2, 3, 64, 64),
        ...          "has_text": torch.tensor([True, False]),
        ...          "has_image": torch.tensor([False, True])}  # a text, then an image
        >>> out = embed_rows(model, batch, {"text_depth": 2})
        >>> bool(out["image"][0].isnan().all()), bool(out["preferred"].isnan().any())
        (True, False)
    """
    features = model.get_item_features(
        input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"], attention_mask=inputs["attention_mask"],
        has_text=inputs["has_text"], has_image=inputs["has_image"], **depths,
    )
    unit = (lambda values: F.normalize(values, dim=-1)) if normalize else (lambda values: values)
    named = {"text": features.text_embeds, "image": features.image_embeds, "multimodal": features.multimodal_embeds,
             "preferred": features.pooler_output}
    return {name: unit(values.float()) for name, values in named.items()}


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
