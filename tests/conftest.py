"""The suite's fixtures (shared helpers and constants are in helpers.py)."""

import json
import os
import runpy
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from helpers import (
    CLUSTERED_DIM,
    CORPUS,
    DDP_SCRIPT,
    DIRECTIONS,
    EMBED_CATEGORIES,
    EMBED_PRODUCTS,
    ENGINE_SCRIPT,
    EVALUATE_DEMO_PRODUCTS,
    EXAMPLE_PRODUCTS,
    EXAMPLES,
    HUB_LOADING_TEXTS,
    MULTILINGUAL,
    PIPELINE_TEXTS,
    SMALL,
    TINY_COLOURS,
    TINY_SHAPES,
    embed_command,
    fast,
    random_image,
    run_many,
    run_script,
    run_without_package,
    save_tiny_hub_folder,
    shard_contents,
    tiny_config,
    tiny_datasets,
    write_jsonl,
    write_user_files,
)
from huggingface_hub import HfApi
from PIL import Image as PILImage
from safetensors.torch import load_file, save_file
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
    save_tiny_hub_folder(processor, work / "base")
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


# ----------------------------------------------------------------- the example scripts' runs (test_examples.py)


@pytest.fixture(scope="module")
def example_env(tmp_path_factory):
    """The environment the example scripts run in: offline, one datasets cache, no launcher variables."""
    values = {key: value for key, value in os.environ.items()
              if not key.startswith(("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_", "PYTHONPATH"))}
    values.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                  HF_DATASETS_CACHE=str(tmp_path_factory.mktemp("datasets_cache")))
    return values


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory, example_env):
    """Every run but the torchrun one. `run_pretraining.py` and `run_categorization.py` (on the user's files) run as
    scripts; the other runs call the scripts' `main(argv)` one after another in one more subprocess, which spares
    the start-up time of each."""
    work = tmp_path_factory.mktemp("examples")
    write_user_files(work / "data")
    run_script("run_pretraining.py", fast(work / "pretraining"), example_env)
    files = ["--train_file", work / "data" / "train.jsonl", "--validation_file", work / "data" / "validation.jsonl",
             "--product_id_column", "sku", "--text_column", "title", "--max_steps", "2",
             "--per_device_train_batch_size", "4", "--vocab_size", "300", "--disable_tqdm", "true"]
    run_script("run_categorization.py", ["--output_dir", work / "category", "--image_column", "photo",
                                         "--label_column", "category", *files], example_env)
    once = ["--do_train", "--do_eval"]
    runs = [
        # the demo catalog with nothing but the output folder (and a small, fast setting): train, eval, test
        ("run_categorization.py", fast(work / "categorization", 4, "--save_steps", "2")),
        # the same run stopped after checkpoint-2, started again: resumes from checkpoint-2
        ("copy", [work / "categorization" / "checkpoint-2", work / "resumed" / "checkpoint-2"]),
        ("run_categorization.py", fast(work / "resumed", 4, "--save_steps", "2")),
        # the finished run started again: resumes at checkpoint-4 = max_steps, trains nothing
        ("copy", [work / "categorization", work / "rerun"]),
        ("run_categorization.py", fast(work / "rerun", 4, "--save_steps", "2")),
        # checkpoints kept: the default limit, and the user's
        ("run_categorization.py", fast(work / "limited", 3, "--save_steps", "1", "--do_train")),
        ("run_categorization.py", fast(work / "kept", 3, "--save_steps", "1", "--do_train", "--save_total_limit", "3")),
        ("run_retrieval.py", ["--task", "query_to_product", *fast(work / "query_to_product")]),
        # image_to_text starts from the pretraining folder: its encoders and processor load into the retrieval head
        *[("run_retrieval.py", ["--task", task, *fast(work / task), *once, *(
            ["--model_name_or_path", work / "pretraining"] if task == "image_to_text" else [])])
          for task in DIRECTIONS],
        # the user's JSON Lines files
        ("run_categorization.py", ["--output_dir", work / "tags", "--label_column", "tags", *files]),  # text only
        # with the text embedding of the product as the target, and a preset changed from the command line
        ("run_retrieval.py", ["--output_dir", work / "search", "--task", "query_to_product", "--query_column",
                              "search", "--image_column", "photo", "--product_embedding", "text",
                              "--config_overrides", "projection_dim=64,text_config.pooling=mean,"
                              "vision_config.image_size=32,vision_config.num_hidden_layers=2,image_depth_choices=[1,2]",
                              *files]),
        ("run_retrieval.py", ["--output_dir", work / "views", "--task", "image_to_product", "--hard_negatives",
                              "--query_image_column", "other_view", "--image_column", "photo", *files]),
    ]
    output = run_many(runs, example_env)
    assert f"resuming training at {work / 'resumed' / 'checkpoint-2'}" in output
    (work / "output.txt").write_text(output)
    return work


@pytest.fixture(scope="module")
def example_demo_catalog():
    from commercemm_hf.data import build_demo_catalog

    return build_demo_catalog(num_products=EXAMPLE_PRODUCTS, seed=0, image_size=64)


@pytest.fixture(scope="module")
def example_fresh_loads(example_runs, example_demo_catalog, example_env):
    """The categorization and query_to_product folders loaded with pipeline(...) / AutoModel in a fresh process
    where commercemm_hf cannot be imported."""
    products = example_demo_catalog["test"]
    for index, row in enumerate(products):
        row["image"].save(example_runs / f"product_{index}.png")
    return run_without_package(f"""
        import json
        from PIL import Image
        from transformers import AutoModel, pipeline
        images = [Image.open(f"product_{{i}}.png") for i in range({len(products)})]
        texts = {list(products["text"])!r}
        classify = pipeline("product-categorization", model="categorization", trust_remote_code=True)
        both = classify({{"image": images[0], "text": texts[0]}}, top_k=30)
        text_only = classify("red ceramic mug", top_k=2)
        search = pipeline("product-search", model="query_to_product", trust_remote_code=True)
        search.index_products([{{"image": image, "text": text}} for image, text in zip(images, texts)],
                              product_ids={list(products["product_id"])!r})
        hits = search({products[0]["queries"][0]!r}, top_k=3)
        model = AutoModel.from_pretrained("query_to_product", trust_remote_code=True)
        print(json.dumps({{"labels": [r["label"] for r in both], "total": sum(r["score"] for r in both),
                          "text_only": len(text_only), "hits": [hit["product_id"] for hit in hits],
                          "model": type(model).__name__}}))
    """, example_runs, env={"HF_DATASETS_CACHE": example_env["HF_DATASETS_CACHE"]})


# ----------------------------------------------------------------- the README (test_readme.py)


@pytest.fixture(scope="module")
def readme_workdir(tmp_path_factory):
    """A folder holding what the README names: the demo's model folder, a categorizer, pairs.jsonl, omni.jsonl."""
    import os

    from transformers import AutoProcessor

    from commercemm_hf import CommerceMMForProductCategorization
    from commercemm_hf.cli import run_demo
    from commercemm_hf.hub import save_hub_folder

    work = tmp_path_factory.mktemp("readme")
    previous = os.getcwd()
    os.chdir(work)
    try:
        run_demo("outputs/demo", num_products=60, steps=2, batch_size=8)
        folder = "outputs/demo/commercemm-tiny-demo"
        head = CommerceMMForProductCategorization.from_pretrained(
            folder, id2label={0: "mug", 1: "lamp", 2: "vase"}, label2id={"mug": 0, "lamp": 1, "vase": 2})
        save_hub_folder(head, AutoProcessor.from_pretrained(folder), "outputs/categorizer")
        image_text, omni = tiny_datasets(6)
        Path(write_jsonl(image_text, work / "pairs", ["image"])).rename(work / "pairs.jsonl")
        Path(write_jsonl(omni, work / "omni", ["image", "source_image"])).rename(work / "omni.jsonl")
        for name in ("pairs", "omni"):  # the image paths are relative to the file, which now sits one level up
            text = (work / f"{name}.jsonl").read_text().replace('"images/', f'"{name}/images/')
            (work / f"{name}.jsonl").write_text(text)
        yield work
    finally:
        os.chdir(previous)


# ----------------------------------------------------------------- distributed runs (test_distributed.py)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """`tests/scripts/ddp_pretraining.py` under torchrun with 2 gloo processes: its folder and each rank's results."""
    output_dir = tmp_path_factory.mktemp("ddp")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RANK", "WORLD_SIZE", "MASTER_"))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(DDP_SCRIPT),
               str(output_dir)]
    result = subprocess.run(command, cwd=DDP_SCRIPT.parent.parent, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return output_dir, [json.loads((output_dir / f"results_{rank}.json").read_text()) for rank in (0, 1)]


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory):
    """Three steps with gradient accumulation 2 under DDP, FSDP2 and DeepSpeed ZeRO-2 (2 gloo processes each)."""
    runs = {}
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RANK", "WORLD_SIZE", "MASTER_"))}
    for engine in ("ddp", "fsdp", "deepspeed"):
        output_dir = tmp_path_factory.mktemp(engine)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   str(ENGINE_SCRIPT), str(output_dir), engine]
        result = subprocess.run(command, cwd=ENGINE_SCRIPT.parent.parent, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, (engine, result.stderr[-4000:])
        runs[engine] = (json.loads((output_dir / "results.json").read_text()),
                        load_file(output_dir / "weights.safetensors"))
    return runs


# ----------------------------------------------------------------- `commercemm embed` (test_embedding_job.py)


@pytest.fixture(scope="module")
def embedding_job(tmp_path_factory, processor):
    """(folder, products, environment) of `commercemm embed`: a tiny saved model and a products dataset on disk."""
    work = tmp_path_factory.mktemp("embed")
    save_tiny_hub_folder(processor, work / "model")
    products, _ = tiny_datasets(num_products=EMBED_PRODUCTS)
    products = products.add_column("category", [EMBED_CATEGORIES[i % 3] for i in range(len(products))])
    products.save_to_disk(str(work / "products"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return work, products, env


@pytest.fixture(scope="module")
def reference_shards(embedding_job):
    """The shards one uninterrupted `commercemm embed` run writes."""
    work, _, env = embedding_job
    subprocess.run(embed_command(work, work / "reference"), env=env, check=True, capture_output=True, timeout=600)
    return shard_contents(work / "reference")


@pytest.fixture
def recorded_pretrain(tmp_path, monkeypatch):
    """`(trainers, train_file, omni_file)`: JSON Lines files of 8 tiny products for `commercemm pretrain`, and the list
    that each `recipes.pretrain` call of the command appends its trainer to."""
    from commercemm_hf.training import recipes

    trainers = []
    original = recipes.pretrain
    monkeypatch.setattr(recipes, "pretrain", lambda *a, **k: trainers.append(original(*a, **k)) or trainers[-1])
    image_text, omni = tiny_datasets(8)
    train_file = write_jsonl(image_text, tmp_path / "image_text", ["image"])
    omni_file = write_jsonl(omni, tmp_path / "omni", ["image", "source_image"])
    return trainers, train_file, omni_file
