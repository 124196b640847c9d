"""Data collators for CommerceMM pretraining: image-text batches (with MLM and MIM masking) and Omni batches.

Rows are what `commercemm_hf.data` produces (DESIGN.md section 3):
* image-text rows: `image` (PIL), `text`, optional `product_id` (rows of one product are not each other's negatives);
* Omni rows: `source_type` (`query` | `view` | `post`), `source_text`, `source_image`, `product_id`, and the
  product's `image` and `text`. A source contributes only what it has: a query its text, a view its image, a
  tagged post both.

Rows of a stream loaded with `image_check="lazy"` (the streaming default) arrive with undecoded images: the
collators decode them (`data.checks.decode_lazy_rows`), and a row whose image does not decode leaves the batch,
counted in its load's report.
"""

from collections.abc import Sequence

import torch

from ..data.checks import decode_lazy_rows
from ..data.schema import stable_id
from ..modeling.configuration_commercemm import CommerceMMConfig


def _column(features: Sequence[dict], name: str, kind: str) -> list:
    try:
        return [feature[name] for feature in features]
    except KeyError:
        raise ValueError(f"{kind} rows need a {name!r} column; got columns {sorted(features[0])}.") from None


def shape_draws(generator: torch.Generator | None, *shape: int, device: torch.device | str | None = None,
                high: int | None = None) -> torch.Tensor:
    """Uniform floats in [0, 1) (or integers in [0, high)) of `shape`, drawn on the generator's own device and then
    moved to `device` (where the batch lives).

    Every random number of a training step is drawn this way, from shapes alone: no generator ever meets a tensor
    of another device (CUDA ops refuse a CPU generator), a CPU generator seeded by the step draws the same numbers
    whether the batch is on the CPU or a GPU (so a GPU run starts with the CPU run's masks), and nothing is copied
    back from the device. The host-to-device copy of these few numbers is asynchronous.

    Example:
        >>> shape_draws(torch.Generator().manual_seed(0), 2, 3).shape
        torch.Size([2, 3])
        >>> int(shape_draws(torch.Generator().manual_seed(0), 4, high=5).max()) < 5
        True
    """
    source = generator.device if generator is not None else torch.device("cpu")
    if high is None:
        values = torch.rand(shape, generator=generator, device=source)
    else:
        values = torch.randint(high, shape, generator=generator, device=source)
    return values.to(device if device is not None else source, non_blocking=True)


def random_patch_mask(batch_size: int, num_patches: int, ratio: float, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """`(batch_size, num_patches)` MIM mask with exactly `max(1, round(ratio * num_patches))` random patches per image,
    on `device` (see `shape_draws`).

    Example:
        >>> random_patch_mask(2, 4, 0.5, torch.Generator().manual_seed(0)).sum(dim=1).tolist()
        [2, 2]
    """
    num_masked = max(1, round(ratio * num_patches))
    ranks = shape_draws(generator, batch_size, num_patches, device=device).argsort(dim=1).argsort(dim=1)
    return ranks < num_masked


class CommerceMMPretrainingCollator:
    """Batches image-text rows for the image-text pass and masks them for MLM (15%, 80/10/10) and MIM (a high
    share of patches).

    `masking=False` returns the unmasked batch; `mask(batch, generator)` masks it later. The pretraining trainer
    masks inside each step with a generator derived from the step, so resuming a run reproduces its masks
    exactly, whatever the data loader prefetched.

    Example:
        >>> from PIL import Image
        >>> from commercemm_hf import CommerceMMImageProcessor, CommerceMMProcessor, train_commercemm_tokenizer
        >>> tokenizer = train_commercemm_tokenizer(["red ceramic mug", "blue cotton shirt"] * 10, vocab_size=300)
        >>> config = CommerceMMConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)})
        >>> size = {"height": 64, "width": 64}
        >>> image_processor = CommerceMMImageProcessor(size={"shortest_edge": 64}, crop_size=size)
        >>> processor = CommerceMMProcessor(image_processor, tokenizer)
        >>> collator = CommerceMMPretrainingCollator(processor, config, seed=0)
        >>> batch = collator([{"image": Image.new("RGB", (80, 60)), "text": "red ceramic mug"}])
        >>> sorted(batch)
        ['attention_mask', 'bool_masked_pos', 'input_ids', 'mlm_input_ids', 'mlm_labels', 'pixel_values']
    """

    def __init__(self, processor, config: CommerceMMConfig, masking: bool = True, seed: int | None = 0,
                 max_length: int | None = None, augment=None):
        self.processor = processor
        self.augment = augment  # an ImageAugmentation (commercemm_hf/training/augmentation.py) or None
        self.config = config
        self.masking = masking
        self.max_length = max_length or config.text_config.max_text_length
        tokenizer = processor.tokenizer
        if len(tokenizer) > config.text_config.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the model's text vocabulary has "
                f"{config.text_config.vocab_size}: build the model with text_config.vocab_size >= len(tokenizer)."
            )
        if tokenizer.mask_token_id is None:
            raise ValueError("MLM needs a tokenizer with a mask token ([MASK] / <mask>).")
        # BERT's MLM masking (80% [MASK], 10% random token, 10% unchanged), as transformers'
        # DataCollatorForLanguageModeling does it, but drawn with `shape_draws` on any device: transformers' version
        # builds its probability matrices on the CPU, so a CUDA batch would need a round trip through the host
        self.mlm_probability = config.mlm_probability
        self.mask_replace_prob = config.mlm_mask_token_ratio
        self.random_replace_prob = config.mlm_random_token_ratio
        self.mask_token_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        vision = config.vision_config
        self.num_patches = vision.num_patches

    def encode(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Cannot collate an empty batch.")
        features = decode_lazy_rows(features)  # a lazily checked stream's images: bad rows leave the batch
        images = _column(features, "image", "Image-text")
        images = self.augment.images(images) if self.augment is not None else images
        texts = _column(features, "text", "Image-text")
        batch = dict(self.processor(
            images=images, text=texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ))
        batch.pop("token_type_ids", None)
        if "product_id" in features[0]:
            batch["pair_index"] = torch.tensor([stable_id(f["product_id"]) for f in features])
        return batch

    def mask(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Add `mlm_input_ids`, `mlm_labels` and `bool_masked_pos` to an encoded batch, on the batch's device.

        """
        generator = generator if generator is not None else self.generator
        input_ids = batch["input_ids"]
        device, (batch_size, length) = input_ids.device, input_ids.shape
        special = torch.isin(input_ids, self.special_ids.to(device, non_blocking=True)) | batch["attention_mask"].eq(0)
        select, replace, randomize = shape_draws(generator, 3, batch_size, length, device=device)
        random_tokens = shape_draws(generator, batch_size, length, device=device, high=self.vocab_size)
        selected = (select < self.mlm_probability) & ~special
        replaced = selected & (replace < self.mask_replace_prob)
        remaining = 1.0 - self.mask_replace_prob  # of the selected tokens not replaced by [MASK], the share randomised
        threshold = self.random_replace_prob / remaining if remaining > 0 else 0.0
        randomized = selected & ~replaced & (randomize < threshold)
        mlm_input_ids = torch.where(replaced, self.mask_token_id, torch.where(randomized, random_tokens, input_ids))
        mlm_labels = input_ids.masked_fill(~selected, -100)
        bool_masked_pos = random_patch_mask(batch_size, self.num_patches, self.config.mim_mask_ratio, generator, device)
        return {**batch, "mlm_input_ids": mlm_input_ids, "mlm_labels": mlm_labels, "bool_masked_pos": bool_masked_pos}

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = self.encode(features)
        return self.mask(batch) if self.masking else batch


class CommerceMMOmniCollator:
    """Batches Omni rows (source -> product) for the 9 Omni-Retrieval losses.

    Products give `product_input_ids` / `product_attention_mask` / `product_pixel_values` and `product_index`;
    sources give their texts (`source_input_ids`, at batch rows `source_text_rows`) and images
    (`source_pixel_values`, at rows `source_image_rows`). A row whose source has neither is an error naming it.
    """

    def __init__(self, processor, config: CommerceMMConfig, max_length: int | None = None, augment=None):
        self.processor = processor
        self.augment = augment  # applied to the product and source images alike
        self.max_length = max_length or config.text_config.max_text_length

    def _encode(self, images=None, text=None) -> dict[str, torch.Tensor]:
        encoded = dict(
            self.processor(
                images=images, text=text, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
        )
        encoded.pop("token_type_ids", None)
        return encoded

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Cannot collate an empty batch.")
        features = decode_lazy_rows(features)
        product_images = _column(features, "image", "Omni")
        source_images = _column(features, "source_image", "Omni")
        if self.augment is not None:
            product_images, source_images = self.augment.images(product_images), self.augment.images(source_images)
        product = self._encode(product_images, _column(features, "text", "Omni"))
        source_texts = _column(features, "source_text", "Omni")
        text_rows = [i for i, text in enumerate(source_texts) if isinstance(text, str) and text.strip()]
        image_rows = [i for i, image in enumerate(source_images) if image is not None]
        missing = sorted(set(range(len(features))) - set(text_rows) - set(image_rows))
        if missing:
            raise ValueError(f"Omni rows {missing} have a source with neither text nor image.")
        batch = {
            "product_input_ids": product["input_ids"],
            "product_attention_mask": product["attention_mask"],
            "product_pixel_values": product["pixel_values"],
            "product_index": torch.tensor([stable_id(f["product_id"]) for f in features]),
            "source_text_rows": torch.tensor(text_rows, dtype=torch.long),
            "source_image_rows": torch.tensor(image_rows, dtype=torch.long),
        }
        if text_rows:
            source = self._encode(text=[source_texts[i] for i in text_rows])
            batch["source_input_ids"] = source["input_ids"]
            batch["source_attention_mask"] = source["attention_mask"]
        if image_rows:
            batch["source_pixel_values"] = self._encode(images=[source_images[i] for i in image_rows])["pixel_values"]
        return batch


__all__ = ["CommerceMMOmniCollator", "CommerceMMPretrainingCollator", "random_patch_mask", "shape_draws", "stable_id"]
