"""A saved CommerceMM folder loads as users load it: in a fresh process where `commercemm_hf` cannot be imported
(remote code), from a local folder and by repo id from a local Hub cache with HF_HUB_OFFLINE=1."""

import json
import shutil

import pytest
import torch
from helpers import HUB_LOADING_TEXTS as TEXTS
from helpers import run_without_package, tiny_config
from safetensors.torch import save_file

from commercemm_hf.hub import save_hub_folder


def test_folder_contents(hub_loading_folder):
    folder = hub_loading_folder / "commercemm-tiny"
    files = {path.name for path in folder.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_commercemm.py", "modeling_commercemm.py",
            "processing_commercemm.py", "image_processing_commercemm.py", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_commercemm.CommerceMMModel"
    assert auto_map["AutoModelForZeroShotImageClassification"] == "modeling_commercemm.CommerceMMModel"
    assert auto_map["AutoConfig"] == "configuration_commercemm.CommerceMMConfig"


LOAD_AND_COMPARE = """
import json, torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor
expected = load_file("expected.safetensors")
model = AutoModel.from_pretrained(MODEL, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(MODEL, trust_remote_code=True)
images = [Image.open(f"image_{i}.png") for i in range(3)]
inputs = processor(images=images, text=%r, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
print(json.dumps({
    "model_class": type(model).__name__, "model_module": type(model).__module__,
    "processor_class": type(processor).__name__,
    "pixel_diff": float((inputs["pixel_values"] - expected["pixel_values"]).abs().max()),
    "ids_equal": bool(torch.equal(inputs["input_ids"], expected["input_ids"])),
    "embeds_diff": float((outputs.multimodal_embeds - expected["multimodal_embeds"]).abs().max()),
    "logits_diff": float((outputs.logits_per_image - expected["logits_per_image"]).abs().max()),
}))
""" % (TEXTS,)


def _check(result):
    assert result["model_class"] == "CommerceMMModel" and result["model_module"].startswith("transformers_modules")
    assert result["processor_class"] == "CommerceMMProcessor"
    assert result["pixel_diff"] == 0.0 and result["ids_equal"]
    assert result["embeds_diff"] < 1e-5 and result["logits_diff"] < 1e-4


def test_remote_code_from_folder_without_the_package(hub_loading_folder):
    _check(run_without_package('MODEL = "commercemm-tiny"\n' + LOAD_AND_COMPARE, hub_loading_folder))


def test_repo_id_from_offline_hub_cache_without_the_package(hub_loading_folder):
    cache = hub_loading_folder / "hub_cache"
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--acme-org--commercemm-tiny"
    shutil.copytree(hub_loading_folder / "commercemm-tiny", repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    result = run_without_package(
        'MODEL = "acme-org/commercemm-tiny"\n' + LOAD_AND_COMPARE, hub_loading_folder,
        env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
    )
    _check(result)


def test_zero_shot_image_classification_pipeline_without_the_package(hub_loading_folder):
    result = run_without_package("""
import json, torch
from PIL import Image
from safetensors.torch import load_file
from transformers import pipeline
classifier = pipeline("zero-shot-image-classification", model="commercemm-tiny", trust_remote_code=True)
scores = classifier(Image.open("image_0.png"), candidate_labels=%r, hypothesis_template="{}")
print(json.dumps({"scores": {row["label"]: row["score"] for row in scores},
                  "expected": load_file("expected.safetensors")["zero_shot"].tolist()}))
""" % (TEXTS,), hub_loading_folder)
    for label, expected in zip(TEXTS, result["expected"]):
        assert result["scores"][label] == pytest.approx(expected, abs=1e-5)


def test_pretraining_folder_carries_the_losses_file_and_trains_without_the_package(tmp_path, processor, tokenizer):
    """The losses live in their own remote-code file: a pretraining folder carries it (imported by the pretraining
    and the retrieval model files), and a fresh process without the package computes the same Omni losses."""
    from commercemm_hf import CommerceMMForPreTraining

    torch.manual_seed(0)
    model = CommerceMMForPreTraining(tiny_config(vocab_size=len(tokenizer))).eval()
    save_hub_folder(model, processor, tmp_path / "pretraining")
    files = {path.name for path in (tmp_path / "pretraining").iterdir()}
    assert {"losses_commercemm.py", "modeling_commercemm_pretraining.py"} <= files
    size = model.config.vision_config.image_size
    ones = torch.ones(6, 6, dtype=torch.long)
    batch = {"product_input_ids": torch.randint(5, 100, (4, 6)), "product_attention_mask": ones[:4],
             "product_pixel_values": torch.randn(4, 3, size, size), "product_index": torch.arange(4),
             "source_input_ids": torch.randint(5, 100, (2, 5)), "source_attention_mask": ones[:2, :5].contiguous(),
             "source_text_rows": torch.tensor([0, 2]), "source_pixel_values": torch.randn(2, 3, size, size),
             "source_image_rows": torch.tensor([1, 2])}
    with torch.no_grad():
        expected = model(**batch).losses
    save_file(batch, str(tmp_path / "batch.safetensors"))
    result = run_without_package("""
import json, torch
from safetensors.torch import load_file
from transformers import AutoModelForPreTraining
model = AutoModelForPreTraining.from_pretrained("pretraining", trust_remote_code=True).eval()
with torch.no_grad():
    losses = model(**load_file("batch.safetensors")).losses
print(json.dumps({"module": type(model).__module__, "losses": {task: float(value) for task, value in losses.items()}}))
""", tmp_path)
    assert result["module"].startswith("transformers_modules")
    assert result["losses"] == pytest.approx({task: float(value) for task, value in expected.items()}, abs=1e-5)


@pytest.mark.parametrize("change, error, message", [
    (lambda folder: (folder / "config.json").write_text("null"), ValueError,
     r"config.json holds null instead of a JSON object"),
    (lambda folder: (folder / "config.json").write_text("{}"), ValueError, r"config.json has no model_type"),
    (lambda folder: (folder / "config.json").write_text('{"model_type": "commer'), ValueError,
     r"config.json is not valid JSON .*a truncated or corrupt file"),
    (lambda folder: (folder / "config.json").unlink(), FileNotFoundError, r"has no config.json"),
    (lambda folder: (folder / "processor_config.json").write_text("[]"), ValueError,
     r"processor_config.json holds \[\] instead of a JSON object"),
    (lambda folder: (folder / "processor_config.json").unlink(), FileNotFoundError, r"has no processor_config.json"),
    (lambda folder: (folder / "tokenizer.json").unlink(), FileNotFoundError, r"has no tokenizer files"),
])
def test_create_model_and_processor_names_what_is_wrong_with_a_folder(hub_loading_folder, tmp_path, change, error,
                                                                      message):
    from commercemm_hf import create_model_and_processor

    folder = tmp_path / "broken"
    shutil.copytree(hub_loading_folder / "commercemm-tiny", folder)
    change(folder)
    with pytest.raises(error, match=message):
        create_model_and_processor(str(folder))


def test_create_model_and_processor_names_a_path_that_is_not_a_folder(tmp_path):
    from commercemm_hf import create_model_and_processor

    with pytest.raises(FileNotFoundError, match=r"'.*no_such_model' is neither a model folder nor a preset"):
        create_model_and_processor(str(tmp_path / "no_such_model"))


def test_the_encoder_and_the_embedding_job_name_a_null_config_json(hub_loading_folder, tmp_path):
    """They load with AutoModel, whose own answer to a `null` config.json is a bare TypeError."""
    from datasets import Dataset

    from commercemm_hf.encoding import CommerceMMEncoder
    from commercemm_hf.search.embedding_job import embed_products

    folder = tmp_path / "broken"
    shutil.copytree(hub_loading_folder / "commercemm-tiny", folder)
    (folder / "config.json").write_text("null")
    with pytest.raises(ValueError, match=r"config.json holds null instead of a JSON object"):
        CommerceMMEncoder.from_pretrained(str(folder))
    with pytest.raises(ValueError, match=r"config.json holds null instead of a JSON object"):
        embed_products(folder, Dataset.from_list([{"text": "red mug", "product_id": "p0"}]), tmp_path / "shards",
                       progress=False)
