import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from commercemm_hf import CommerceMMImageProcessor, CommerceMMProcessor, train_commercemm_tokenizer


CORPUS = [
    "red ceramic mug with blue stripes", "green leather backpack", "dotted cotton t-shirt acme",
    "taza roja de cerámica", "grüner Rucksack aus Leder", "lampe bleue en verre", "steel desk lamp zenith",
    "wooden vase with zigzag pattern", "running shoe mesh orbit", "wireless headphones black nova",
] * 8


@pytest.fixture(scope="session")
def tokenizer():
    return train_commercemm_tokenizer(CORPUS, vocab_size=300, model_max_length=40)


@pytest.fixture(scope="session")
def processor(tokenizer):
    image_processor = CommerceMMImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CommerceMMProcessor(image_processor=image_processor, tokenizer=tokenizer)


def random_image(seed: int, size=(48, 40), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


@pytest.fixture()
def small_disk(tmp_path):
    """A real 1 MiB file system (tmpfs); skipped where mounting is not allowed (not root, no tmpfs)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield mount_point
    subprocess.run(["umount", "--lazy", str(mount_point)], check=True)  # a failed writer may still hold a file
