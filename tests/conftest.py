"""The suite's fixtures (shared helpers and constants are in helpers.py)."""

import json
import os
import runpy
import shutil
import socket
import subprocess

import huggingface_hub
import pytest
import torch
from helpers import (
    CLUSTERED_DIM,
    CORPUS,
    EVALUATE_DEMO_PRODUCTS,
    EXAMPLES,
    HUB_LOADING_TEXTS,
    MULTILINGUAL,
    PIPELINE_TEXTS,
    SMALL,
    TINY_COLOURS,
    TINY_SHAPES,
    random_image,
    tiny_config,
    tiny_datasets,
)
from huggingface_hub import HfApi
from PIL import Image as PILImage
from safetensors.torch import save_file
from torch.nn import functional as F

from commercemm_hf import (
    CommerceMMEncoder,
    CommerceMMForProductCategorization,
    CommerceMMImageProcessor,
    CommerceMMModel,
    CommerceMMProcessor,
    train_commercemm_tokenizer,
)
from commercemm_hf.cli import main
from commercemm_hf.data.demo_catalog import build_demo_catalog, to_image_text_rows, to_omni_rows
from commercemm_hf.hub import save_hub_folder
from commercemm_hf.search import clustered_unit_vectors
from commercemm_hf.training import CommerceMMOmniCollator, CommerceMMPretrainingCollator
from commercemm_hf.training.recipes import prepare_demo


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


# -------------------------------------------------------------------------- saved models and hub folders


@pytest.fixture()
def saved_tiny_model(tmp_path):
    """A tiny `CommerceMMModel` and the folder it was saved to (per test: tests rewrite its weights)."""
    torch.manual_seed(0)
    model = CommerceMMModel(tiny_config()).eval()
    model.save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


@pytest.fixture(scope="module")
def hub_loading_folder(tmp_path_factory, processor, tokenizer):
    """A hub folder (commercemm-tiny/), three images, and the outputs expected of them (expected.safetensors)."""
    work = tmp_path_factory.mktemp("hub")
    model = CommerceMMModel(tiny_config(vocab_size=len(tokenizer))).eval()
    save_hub_folder(model, processor, work / "commercemm-tiny")
    images = [random_image(seed) for seed in range(3)]
    for index, image in enumerate(images):
        image.save(work / f"image_{index}.png")
    inputs = processor(images=images, text=HUB_LOADING_TEXTS, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
        zero_shot = model(pixel_values=inputs["pixel_values"][:1], input_ids=inputs["input_ids"],
                          attention_mask=inputs["attention_mask"]).logits_per_image.softmax(-1)[0]
    save_file({
        "pixel_values": inputs["pixel_values"], "input_ids": inputs["input_ids"],
        "attention_mask": inputs["attention_mask"], "multimodal_embeds": outputs.multimodal_embeds,
        "logits_per_image": outputs.logits_per_image.contiguous(), "zero_shot": zero_shot,
    }, str(work / "expected.safetensors"))
    return work


@pytest.fixture(scope="module")
def serving_folder(tmp_path_factory, processor):
    """A saved hub folder of a tiny model, to export and serve."""
    torch.manual_seed(0)
    model = CommerceMMModel(tiny_config()).eval()
    return save_hub_folder(model, processor, tmp_path_factory.mktemp("serving") / "base")


@pytest.fixture(scope="module")
def exported_onnx(serving_folder):
    """The three graphs, fp32 and int8, exported once through the CLI (the check table is printed there)."""
    main(["export", str(serving_folder), "--format", "onnx", "--quantize", "int8"])
    return serving_folder / "onnx"


@pytest.fixture(scope="module")
def publish_source_folder(tmp_path_factory, processor, tokenizer):
    """A saved hub folder of a tiny model, to publish (copied per test by `publish_folder`)."""
    folder = tmp_path_factory.mktemp("publish") / "commercemm-tiny"
    save_hub_folder(CommerceMMModel(tiny_config(vocab_size=len(tokenizer))), processor, folder)
    return folder


@pytest.fixture
def publish_folder(publish_source_folder, tmp_path):
    """A fresh copy per test (publishing writes README.md into it)."""
    return shutil.copytree(publish_source_folder, tmp_path / "out" / "commercemm-tiny")


@pytest.fixture(scope="module")
def pipeline_folders(tmp_path_factory, processor, tokenizer):
    """base/ and categorization/ hub folders, images of `PIPELINE_TEXTS`, and what the pipelines must answer
    (expected.json)."""
    work = tmp_path_factory.mktemp("pipelines")
    torch.manual_seed(0)
    model = CommerceMMModel(tiny_config(vocab_size=len(tokenizer))).eval()
    save_hub_folder(model, processor, work / "base")
    labels = ["mug", "bag", "lamp"]
    head_config = tiny_config(vocab_size=len(tokenizer), id2label=dict(enumerate(labels)),
                              label2id={label: i for i, label in enumerate(labels)})
    head = CommerceMMForProductCategorization(head_config).eval()
    save_hub_folder(head, processor, work / "categorization")
    images = [random_image(seed, size=(40 + 7 * seed, 36)) for seed in range(len(PIPELINE_TEXTS))]
    for index, image in enumerate(images):
        image.save(work / f"image_{index}.png")
    inputs = processor(images=images, text=PIPELINE_TEXTS, return_tensors="pt")
    with torch.no_grad():
        expected = {
            "text": F.normalize(model.get_text_features(input_ids=inputs["input_ids"][:1],
                                                        attention_mask=inputs["attention_mask"][:1]).pooler_output,
                              dim=-1),
            "image": F.normalize(model.get_image_features(pixel_values=inputs["pixel_values"][1:2]).pooler_output,
                                 dim=-1),
            "multimodal": F.normalize(model.get_multimodal_features(
                input_ids=inputs["input_ids"][2:3], attention_mask=inputs["attention_mask"][2:3],
                pixel_values=inputs["pixel_values"][2:3]).pooler_output, dim=-1),
            "shallow_text": F.normalize(model.get_text_features(
                input_ids=inputs["input_ids"][:1], attention_mask=inputs["attention_mask"][:1], text_depth=1
            ).pooler_output, dim=-1),
        }
        products = F.normalize(model.get_multimodal_features(**inputs).pooler_output, dim=-1)
        query = F.normalize(model.get_text_features(input_ids=inputs["input_ids"][3:4],
                                                    attention_mask=inputs["attention_mask"][3:4]).pooler_output, dim=-1)
        scores, order = (query @ products.t()).topk(3)
        head_logits = head(input_ids=inputs["input_ids"][:1], attention_mask=inputs["attention_mask"][:1],
                           pixel_values=inputs["pixel_values"][:1]).logits[0]
    (work / "expected.json").write_text(json.dumps({
        **{kind: value[0].tolist() for kind, value in expected.items()},
        "search_ids": [f"p{int(i)}" for i in order[0]], "search_scores": scores[0].tolist(),
        "categorization": [labels[int(i)] for i in head_logits.softmax(-1).argsort(descending=True)],
    }))
    return work


@pytest.fixture(scope="module")
def pipeline_input_folders(tmp_path_factory, processor, tokenizer):
    """base/ and categorization/ hub folders with good and truncated PNG files beside them."""
    work = tmp_path_factory.mktemp("pipeline_inputs")
    torch.manual_seed(0)
    save_hub_folder(CommerceMMModel(tiny_config(vocab_size=len(tokenizer))).eval(), processor, work / "base")
    labels = ["mug", "lamp"]
    head_config = tiny_config(vocab_size=len(tokenizer), id2label=dict(enumerate(labels)),
                              label2id={label: i for i, label in enumerate(labels)},
                              expected_modalities=["image", "text"])
    save_hub_folder(CommerceMMForProductCategorization(head_config).eval(), processor, work / "categorization")
    for index in range(3):
        random_image(index).save(work / f"good_{index}.png")
    # a PNG cut after its header: PIL opens it lazily and fails only when decoding
    (work / "truncated.png").write_bytes((work / "good_0.png").read_bytes()[:80])
    return work


@pytest.fixture(scope="module")
def tiny_hub_folder(tmp_path_factory, processor):
    """A saved hub folder of a tiny model (seed 0)."""
    folder = tmp_path_factory.mktemp("conformance") / "base"
    torch.manual_seed(0)
    save_hub_folder(CommerceMMModel(tiny_config(vocab_size=300)).eval(), processor, folder)
    return folder


@pytest.fixture(scope="module")
def tiny_encoder(tokenizer, processor):
    """A `CommerceMMEncoder` of a tiny model (seed 0) and the suite's processor."""
    torch.manual_seed(0)
    return CommerceMMEncoder(CommerceMMModel(tiny_config(vocab_size=len(tokenizer))), processor)


# ------------------------------------------------------------------------- the Hub, without the network


@pytest.fixture
def no_network(monkeypatch):
    """Any Hub call or socket connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    for name in ("create_repo", "upload_folder", "upload_file", "create_commit", "whoami"):
        monkeypatch.setattr(HfApi, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def fake_hub(monkeypatch):
    """Fake `HfApi.create_repo` / `upload_folder` that record their arguments."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", kwargs))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(AssertionError("network")))
    return calls


@pytest.fixture
def no_stored_token(monkeypatch, tmp_path):
    """No Hub token in the environment or on disk."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))


# --------------------------------------------------------------------------------------------- datasets


@pytest.fixture()
def red_png_folder(tmp_path):
    """A data/ folder holding one red.png."""
    data = tmp_path / "data"
    data.mkdir()
    PILImage.new("RGB", (8, 8), "red").save(data / "red.png")
    return data


@pytest.fixture(scope="module")
def engine_datasets():
    """`tiny_datasets(16)`: image-text and Omni rows of 16 products."""
    return tiny_datasets(16)


@pytest.fixture(scope="module")
def pretraining_datasets():
    """`tiny_datasets(12)`: image-text and Omni rows of 12 products."""
    return tiny_datasets(12)


@pytest.fixture(scope="module")
def pretraining_batches(processor, tokenizer, pretraining_datasets):
    """The image-text collator, its unmasked batch of the 12 products, and the Omni batch of their 36 sources."""
    image_text, omni = pretraining_datasets
    config = tiny_config(vocab_size=len(tokenizer))
    image_text_collator = CommerceMMPretrainingCollator(processor, config, masking=False)
    omni_collator = CommerceMMOmniCollator(processor, config)
    return (image_text_collator, image_text_collator([image_text[i] for i in range(12)]),
            omni_collator([omni[i] for i in range(36)]))


@pytest.fixture()
def image_files_folder(tmp_path):
    """A data folder with good, corrupt and truncated images under images/."""
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    for name, colour in (("red", "red"), ("blue", "blue"), ("green", "green")):
        PILImage.new("RGB", (12, 10), colour).save(folder / "images" / f"{name}.png")
    (folder / "images" / "corrupt.png").write_bytes(b"this is not a png")
    PILImage.new("RGB", (64, 64), "white").save(folder / "images" / "full.jpg", quality=95)
    data = (folder / "images" / "full.jpg").read_bytes()
    (folder / "images" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return folder


@pytest.fixture(scope="module")
def small_demo_catalog():
    """The demo catalog of 60 products, split."""
    return build_demo_catalog(num_products=60, seed=0)


@pytest.fixture(scope="module")
def medium_demo_catalog():
    """~300 products in one split, for statistics and the baselines."""
    return build_demo_catalog(num_products=300, seed=0, split_fractions=(1.0, 0.0, 0.0))["train"]


@pytest.fixture(scope="module")
def head_inputs(processor):
    """Inputs of 12 tiny products, their shape labels, multi-hot colour labels, and query + view sources."""
    image_text, omni = tiny_datasets(12)
    inputs = processor(images=list(image_text["image"]), text=list(image_text["text"]), return_tensors="pt")
    shape_labels = torch.tensor([TINY_SHAPES.index(text.split()[-1]) for text in image_text["text"]])
    colour_hot = torch.zeros(len(image_text), len(TINY_COLOURS))
    for row, text in enumerate(image_text["text"]):
        colour_hot[row, TINY_COLOURS.index(text.split()[0])] = 1
        colour_hot[row, 0] = 1  # a second label on every row: genuinely multi-label
    queries = [row["source_text"] for row in omni if row["source_type"] == "query"]
    views = [row["source_image"] for row in omni if row["source_type"] == "view"]
    sources = processor(images=views, text=queries, return_tensors="pt")
    return inputs, shape_labels, colour_hot, sources


@pytest.fixture(scope="module")
def clustered_catalog():
    """3,000 clustered unit vectors, 64 queries, their ids and metadata, for the product index."""
    vectors = clustered_unit_vectors(3000, CLUSTERED_DIM, seed=0)
    queries = clustered_unit_vectors(64, CLUSTERED_DIM, seed=0, offset=3000)
    ids = [f"p{i:05d}" for i in range(len(vectors))]
    metadata = [{"category": f"c{i % 7}", "in_stock": i % 3 == 0} for i in range(len(vectors))]
    return vectors, queries, ids, metadata


@pytest.fixture(scope="module")
def run_categorization_main():
    """`examples/run_categorization.py`'s `main(argv)`."""
    return runpy.run_path(str(EXAMPLES / "run_categorization.py"), run_name="categorization")["main"]


@pytest.fixture()
def image_label_rows(tmp_path):
    """Rows with an image and a label, and no text column at all."""
    folder = tmp_path / "data"
    folder.mkdir()
    rows = []
    for index, (colour, label) in enumerate([("red", "mug"), ("blue", "lamp")] * 4):
        PILImage.new("RGB", (16, 16), colour).save(folder / f"{index}.png")
        rows.append({"photo": f"{index}.png", "category": label})
    (folder / "train.jsonl").write_text("\n".join(map(json.dumps, rows)), encoding="utf-8")
    return folder / "train.jsonl"


@pytest.fixture(scope="module")
def tiny_demo():
    """The prepared demo (catalog, config, processor) of `EVALUATE_DEMO_PRODUCTS` products, with a tiny model in
    `extra["model"]`."""
    torch.manual_seed(0)
    data = prepare_demo(num_products=EVALUATE_DEMO_PRODUCTS, vocab_size=400)
    data.extra["model"] = CommerceMMModel(data.config).eval()
    return data


@pytest.fixture(scope="module")
def validation_rows(tiny_demo):
    """The demo's validation split as image-text rows and as Omni rows."""
    rows = tiny_demo.catalog["validation"]
    return to_image_text_rows(rows), to_omni_rows(rows)


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
