"""Training-image augmentation (commercemm_hf/training/augmentation.py) and its collator hooks."""

import numpy as np
import pytest
import torch
from helpers import random_image

from commercemm_hf.training import finetuning as ft
from commercemm_hf.training.augmentation import ImageAugmentation, augmentation_from_flags
from commercemm_hf.training.collators import CommerceMMOmniCollator


def test_same_seed_same_images_other_seed_other_images():
    image = random_image(0, size=(48, 40))
    first = [ImageAugmentation(seed=3)(image).tobytes() for _ in range(1)] + \
        [a.tobytes() for a in ImageAugmentation(seed=3).images([image, image])]
    second = [ImageAugmentation(seed=3)(image).tobytes()] + \
        [a.tobytes() for a in ImageAugmentation(seed=3).images([image, image])]
    assert first == second
    assert ImageAugmentation(seed=3)(image).tobytes() != ImageAugmentation(seed=4)(image).tobytes()
    # successive draws of one augmenter differ: each epoch sees other crops
    augment = ImageAugmentation(seed=3)
    assert augment(image).tobytes() != augment(image).tobytes()


def test_size_mode_and_range_are_kept():
    image = random_image(1, size=(48, 40), mode="L")
    for seed in range(5):
        out = ImageAugmentation(seed=seed, scale=(0.2, 1.0), jitter=0.9)(image)
        assert out.size == (48, 40) and out.mode == "RGB"
        values = np.asarray(out)
        assert values.dtype == np.uint8 and values.shape == (40, 48, 3)
    box = ImageAugmentation(seed=0, scale=(0.25, 0.25), ratio=(1.0, 1.0)).crop_box(40, 40)
    assert (box[2] - box[0], box[3] - box[1]) == (20, 20)


def test_identity_settings_change_nothing_and_none_stays_none():
    image = random_image(2)
    identity = ImageAugmentation(scale=(1.0, 1.0), flip=0.0, jitter=0.0)
    assert identity(image).tobytes() == image.tobytes()
    assert identity.images([None, image])[0] is None
    assert ImageAugmentation(scale=(1.0, 1.0), flip=1.0, jitter=0.0)(image).tobytes() == \
        image.transpose(0).tobytes()  # FLIP_LEFT_RIGHT


@pytest.mark.parametrize("kwargs", [{"scale": (0.0, 1.0)}, {"scale": (0.8, 0.5)}, {"flip": 1.5}, {"jitter": 1.0}])
def test_bad_settings_are_named(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ImageAugmentation(**kwargs)


def test_off_by_default_and_flags():
    assert ft.DataArguments().augment is False and ft.DataArguments().augmentation() is None
    augment = ft.DataArguments(augment=True, augment_scale_min=0.3, augment_flip=0.0).augmentation(seed=5)
    assert augment.scale == (0.3, 1.0) and augment.flip == 0.0 and augment.seed == 5
    assert augmentation_from_flags(False) is None


def test_collators_augment_training_batches_only(processor):
    rows = [{"source_image": random_image(i), "image": random_image(10 + i), "text": f"item {i}",
             "product_id": str(i)} for i in range(3)]
    plain = ft.RetrievalCollator(processor, "image_to_product", 16)
    augmented = ft.RetrievalCollator(processor, "image_to_product", 16, augment=ImageAugmentation(seed=0))
    clean = plain(rows)
    changed = augmented(rows)
    assert changed["source_pixel_values"].shape == clean["source_pixel_values"].shape
    assert not torch.equal(changed["source_pixel_values"], clean["source_pixel_values"])
    assert not torch.equal(changed["pixel_values"], clean["pixel_values"])
    # evaluation batches (for_evaluation, only) are the images as they are
    assert torch.equal(augmented.for_evaluation()(rows)["source_pixel_values"], clean["source_pixel_values"])
    assert torch.equal(augmented.only("target")(rows)["pixel_values"], clean["pixel_values"])
    labels = ft.LabelSpec(["a", "b"], False, {"a": 0, "b": 1})
    category_rows = [{"image": random_image(i), "text": "x", "label": "ab"[i % 2]} for i in range(2)]
    categorize = ft.CategorizationCollator(processor, labels, "image", 16, augment=ImageAugmentation(seed=0))
    assert not torch.equal(categorize(category_rows)["pixel_values"],
                           categorize.for_evaluation()(category_rows)["pixel_values"])


def test_omni_collator_augments_products_and_views(processor):
    from commercemm_hf import CommerceMMConfig

    config = CommerceMMConfig.from_preset("tiny", text_config={"vocab_size": len(processor.tokenizer)})
    rows = [{"source_type": "view", "source_text": None, "source_image": random_image(i), "product_id": str(i),
             "image": random_image(5 + i), "text": "mug"} for i in range(2)]
    clean = CommerceMMOmniCollator(processor, config)(rows)
    changed = CommerceMMOmniCollator(processor, config, augment=ImageAugmentation(seed=0))(rows)
    assert not torch.equal(clean["source_pixel_values"], changed["source_pixel_values"])
    assert not torch.equal(clean["product_pixel_values"], changed["product_pixel_values"])
