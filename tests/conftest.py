"""The suite's fixtures (shared helpers and constants are in helpers.py)."""

import os
import subprocess

import pytest
import torch

from commercemm_hf import CommerceMMImageProcessor, CommerceMMModel, CommerceMMProcessor, train_commercemm_tokenizer
from helpers import CORPUS, MULTILINGUAL, SMALL, tiny_config


# ------------------------------------------------------------------------------- the suite's tokenizer and processor


@pytest.fixture(scope="session")
def tokenizer():
    return train_commercemm_tokenizer(CORPUS, vocab_size=300, model_max_length=40)


@pytest.fixture(scope="session")
def processor(tokenizer):
    image_processor = CommerceMMImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CommerceMMProcessor(image_processor=image_processor, tokenizer=tokenizer)


# --------------------------------------------------------------------- input processing (test_processing.py)


@pytest.fixture(scope="module")
def unnormalized():
    """Pixel values in [0, 1] (rescaled, no mean/std), so pictures compare directly."""
    return CommerceMMImageProcessor(do_normalize=False, **SMALL)


@pytest.fixture(scope="module", params=["bpe", "wordpiece"])
def multilingual_tokenizer(request):
    """A tokenizer of each algorithm trained on `MULTILINGUAL`, with a 20-token limit."""
    return train_commercemm_tokenizer(MULTILINGUAL, vocab_size=400, algorithm=request.param, model_max_length=20)


@pytest.fixture(scope="module")
def multilingual_processor(multilingual_tokenizer):
    """`multilingual_tokenizer` with the small (`SMALL`) image settings."""
    return CommerceMMProcessor(CommerceMMImageProcessor(**SMALL), multilingual_tokenizer)


# ---------------------------------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def model():
    """A tiny `CommerceMMModel` (seed 0) in eval mode, one per test module."""
    torch.manual_seed(0)
    return CommerceMMModel(tiny_config()).eval()


# ---------------------------------------------------------------------------------------------------- file systems


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
