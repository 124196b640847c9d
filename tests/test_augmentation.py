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


def test_pretraining_augments_both_training_streams_and_evaluates_on_plain_images(tmp_path):
    """`run_pretraining.py --augment` reaches the pretraining trainer: its training collators of both streams
    augment, its evaluation collators do not, and a step trains."""
    from transformers import TrainingArguments

    from commercemm_hf import CommerceMMForPreTraining
    from commercemm_hf.training import CommerceMMPretrainingTrainer
    from commercemm_hf.training.recipes import prepare_demo

    demo = prepare_demo(num_products=8, vocab_size=300, vision_config={"image_size": 32})
    augment = augmentation_from_flags(True, seed=0)
    args = TrainingArguments(str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to=[],
                             disable_tqdm=True, save_strategy="no", use_cpu=True)
    trainer = CommerceMMPretrainingTrainer(model=CommerceMMForPreTraining(demo.config), args=args,
                                           train_dataset=demo.train_rows, omni_dataset=demo.train_omni,
                                           eval_dataset=demo.train_rows, eval_omni_dataset=demo.train_omni,
                                           processor=demo.processor, augment=augment)
    assert trainer.data_collator.augment is augment and trainer.omni_collator.augment is augment
    assert all(collator.augment is None for collator in trainer.eval_collators)
    rows = [demo.train_rows[0]]
    plain = trainer.eval_collators[0].encode(rows)["pixel_values"]
    assert torch.equal(trainer.eval_collators[0].encode(rows)["pixel_values"], plain)
    assert not torch.equal(trainer.data_collator.encode(rows)["pixel_values"], plain)
    assert trainer.train().global_step == 1
    assert all(np.isfinite(value) for key, value in trainer.evaluate().items() if key.endswith("_loss"))
    parsed = ft.parse_arguments((ft.ModelArguments, ft.DataArguments, ft.PretrainingArguments, TrainingArguments),
                                ["--output_dir", str(tmp_path), "--augment"])
    assert parsed[1].augmentation(0) is not None
