"""Serving: `commercemm export` (ONNX through torch.export, fp32 and int8) equal to eager on padded batches, the ONNX
Runtime backend of the embedding pipeline, and the sentence-transformers round trip of a saved folder."""

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from commercemm_hf import CommerceMMModel
from commercemm_hf.cli import main
from commercemm_hf.export import GRAPHS, export_onnx, session
from commercemm_hf.hub import save_hub_folder
from conftest import random_image
from helpers import tiny_config


onnxruntime = pytest.importorskip("onnxruntime")

TEXTS = ["red ceramic mug with blue stripes", "lamp", "green leather backpack acme nova zenith orbit", "",
         "taza roja"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, processor):
    torch.manual_seed(0)
    model = CommerceMMModel(tiny_config()).eval()
    return save_hub_folder(model, processor, tmp_path_factory.mktemp("serving") / "base")


@pytest.fixture(scope="module")
def exported(folder):
    """The three graphs, fp32 and int8, exported once through the CLI (the check table is printed there)."""
    main(["export", str(folder), "--format", "onnx", "--quantize", "int8"])
    return folder / "onnx"


def padded_batch(processor, texts, seed=0):
    images = [random_image(seed + i, size=(40 + 9 * i, 33 + 5 * i)) for i in range(len(texts))]
    inputs = processor(images=images, text=texts, padding=True, truncation=True, return_tensors="pt")
    assert (inputs["attention_mask"] == 0).any(), "the batch must be padded"
    return {name: inputs[name] for name in ("input_ids", "attention_mask", "pixel_values")}


def test_export_writes_three_graphs_names_and_processor(exported, folder):
    config = json.loads((exported / "onnx_config.json").read_text())
    assert set(config["graphs"]) == set(GRAPHS)
    assert [i["name"] for i in config["graphs"]["text"]["inputs"]] == ["input_ids", "attention_mask"]
    assert [i["name"] for i in config["graphs"]["multimodal"]["inputs"]] == ["input_ids", "attention_mask",
                                                                            "pixel_values"]
    assert config["graphs"]["image"]["outputs"][0]["name"] == "image_embeds"
    for kind, entry in config["graphs"].items():
        for file_name in (entry["file"], entry["int8_file"]):
            names = [value.name for value in session(exported / file_name).get_inputs()]
            assert names == [i["name"] for i in entry["inputs"]]
    for name, check in config["checks"].items():
        assert check["passed"] and check["min_cosine"] >= (0.99 if name.endswith("int8") else 0.9999), name
    from transformers import AutoProcessor
    assert AutoProcessor.from_pretrained(exported, trust_remote_code=True).tokenizer.vocab_size > 0


@pytest.mark.parametrize("kind", list(GRAPHS))
def test_exported_graphs_equal_eager_on_new_padded_batches_fp32_and_int8(exported, folder, processor, kind):
    """Batch sizes and lengths the export never saw (dynamic axes), rows padded by different amounts."""
    model = CommerceMMModel.from_pretrained(folder).eval()
    module = GRAPHS[kind](model).eval()
    entry = json.loads((exported / "onnx_config.json").read_text())["graphs"][kind]
    for texts, seed in ((TEXTS, 0), (TEXTS[:2], 7), (TEXTS[2:3] + TEXTS[1:2] * 6, 3)):
        batch = {name: padded_batch(processor, texts, seed)[name] for name in module.input_names}
        with torch.no_grad():
            expected = module(**batch)
        for file_name, threshold in ((entry["file"], 0.9999), (entry["int8_file"], 0.99)):
            got = session(exported / file_name).run(None, {k: v.numpy() for k, v in batch.items()})[0]
            cosine = F.cosine_similarity(torch.from_numpy(got), expected, dim=-1)
            assert cosine.min() >= threshold, (kind, file_name, cosine)
        if "attention_mask" in batch:  # the mask matters: the graph must not give the unmasked result
            with torch.no_grad():
                unmasked = module(**{**batch, "attention_mask": torch.ones_like(batch["attention_mask"])})
            got = session(exported / entry["file"]).run(None, {k: v.numpy() for k, v in batch.items()})[0]
            padded_rows = (batch["attention_mask"] == 0).any(dim=1)
            assert not np.allclose(got[padded_rows.numpy()], unmasked[padded_rows].numpy(), atol=1e-4)


def test_export_refuses_unknown_options(folder):
    with pytest.raises(ValueError, match="quantize must be one of"):
        export_onnx(folder, quantize="int4")
    with pytest.raises(ValueError, match="unknown graphs"):
        export_onnx(folder, graphs=("audio",))
