"""Serving: `commercemm export` (ONNX through torch.export, fp32 and int8) equal to eager on padded batches, the ONNX
Runtime backend of the embedding pipeline, and the sentence-transformers round trip of a saved folder."""

import json

import numpy as np
import pytest
import torch
from helpers import random_image
from torch.nn import functional as F

from commercemm_hf import CommerceMMModel
from commercemm_hf.export import GRAPHS, export_onnx, session


onnxruntime = pytest.importorskip("onnxruntime")

TEXTS = ["red ceramic mug with blue stripes", "lamp", "green leather backpack acme nova zenith orbit", "",
         "taza roja"]


def padded_batch(processor, texts, seed=0):
    images = [random_image(seed + i, size=(40 + 9 * i, 33 + 5 * i)) for i in range(len(texts))]
    inputs = processor(images=images, text=texts, padding=True, truncation=True, return_tensors="pt")
    assert (inputs["attention_mask"] == 0).any(), "the batch must be padded"
    return {name: inputs[name] for name in ("input_ids", "attention_mask", "pixel_values")}


def test_export_writes_three_graphs_names_and_processor(exported_onnx, serving_folder):
    config = json.loads((exported_onnx / "onnx_config.json").read_text())
    assert set(config["graphs"]) == set(GRAPHS)
    # what a server should pass to onnxruntime.InferenceSession (the fused SkipLayerNormalization kernel is slower)
    assert config["session"]["disabled_optimizers"] == ["SkipLayerNormFusion"]
    assert [i["name"] for i in config["graphs"]["text"]["inputs"]] == ["input_ids", "attention_mask"]
    assert [i["name"] for i in config["graphs"]["multimodal"]["inputs"]] == ["input_ids", "attention_mask",
                                                                            "pixel_values"]
    assert config["graphs"]["image"]["outputs"][0]["name"] == "image_embeds"
    for entry in config["graphs"].values():
        for file_name in (entry["file"], entry["int8_file"]):
            names = [value.name for value in session(exported_onnx / file_name).get_inputs()]
            assert names == [i["name"] for i in entry["inputs"]]
    for name, check in config["checks"].items():
        assert check["passed"] and check["min_cosine"] >= (0.99 if name.endswith("int8") else 0.9999), name
    from transformers import AutoProcessor
    assert AutoProcessor.from_pretrained(exported_onnx, trust_remote_code=True).tokenizer.vocab_size > 0


@pytest.mark.parametrize("kind", list(GRAPHS))
def test_exported_graphs_equal_eager_on_new_padded_batches_fp32_and_int8(exported_onnx, serving_folder, processor,
                                                                         kind):
    """Batch sizes and lengths the export never saw (dynamic axes), rows padded by different amounts."""
    model = CommerceMMModel.from_pretrained(serving_folder).eval()
    module = GRAPHS[kind](model).eval()
    entry = json.loads((exported_onnx / "onnx_config.json").read_text())["graphs"][kind]
    for texts, seed in ((TEXTS, 0), (TEXTS[:2], 7), (TEXTS[2:3] + TEXTS[1:2] * 6, 3)):
        batch = {name: padded_batch(processor, texts, seed)[name] for name in module.input_names}
        with torch.no_grad():
            expected = module(**batch)
        for file_name, threshold in ((entry["file"], 0.9999), (entry["int8_file"], 0.99)):
            got = session(exported_onnx / file_name).run(None, {k: v.numpy() for k, v in batch.items()})[0]
            cosine = F.cosine_similarity(torch.from_numpy(got), expected, dim=-1)
            assert cosine.min() >= threshold, (kind, file_name, cosine)
        if "attention_mask" in batch:  # the mask matters: the graph must not give the unmasked result
            with torch.no_grad():
                unmasked = module(**{**batch, "attention_mask": torch.ones_like(batch["attention_mask"])})
            got = session(exported_onnx / entry["file"]).run(None, {k: v.numpy() for k, v in batch.items()})[0]
            padded_rows = (batch["attention_mask"] == 0).any(dim=1)
            assert not np.allclose(got[padded_rows.numpy()], unmasked[padded_rows].numpy(), atol=1e-4)


def test_export_refuses_unknown_options(serving_folder):
    with pytest.raises(ValueError, match="quantize must be one of"):
        export_onnx(serving_folder, quantize="int4")
    with pytest.raises(ValueError, match="unknown graphs"):
        export_onnx(serving_folder, graphs=("audio",))


def product_items():
    images = [random_image(20 + i) for i in range(3)]
    return ["red ceramic mug", {"image": images[0]}, {"image": images[1], "text": "green leather backpack acme"},
            "lamp", {"image": images[2], "text": "x"}]


def test_embedding_pipeline_onnx_backend_equals_torch(exported_onnx, serving_folder):
    from transformers import pipeline

    items = product_items()
    results = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        embed = pipeline("product-embedding", model=str(serving_folder), trust_remote_code=True, backend=backend)
        results[backend] = embed(items, batch_size=3, return_tensors=True)
    for backend, tolerance in (("onnx", 1e-5), ("onnx-int8", 0.05)):
        for expected, got in zip(results["torch"], results[backend]):
            for key, value in expected.items():
                if value is None:
                    assert got[key] is None, key
                    continue
                torch.testing.assert_close(got[key], value, atol=tolerance, rtol=0)
                if backend == "onnx-int8":
                    assert float(torch.dot(got[key], value)) >= 0.99


def test_search_pipeline_onnx_backend_equals_torch(exported_onnx, serving_folder):
    """Indexing and queries on the exported graphs give the torch scores (fp32 exactly, int8 within 0.05)."""
    from transformers import pipeline

    products = [{"image": random_image(60 + i), "text": text or "x"} for i, text in enumerate(TEXTS)]
    ids = [f"p{i}" for i in range(len(products))]
    queries = ["red mug", {"image": random_image(70)}, {"image": random_image(71), "text": "lamp"}]
    results = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        search = pipeline("product-search", model=str(serving_folder), trust_remote_code=True, backend=backend)
        search.index_products(products, product_ids=ids, batch_size=2)
        results[backend] = search(queries, top_k=len(products))
        if backend == "torch":  # a call's backend= applies to its queries (the index stays the torch one)
            mixed = search(queries, top_k=len(products), backend="onnx")
    for backend, tolerance in (("onnx", 1e-5), ("onnx-int8", 0.05)):
        for expected, got in zip(results["torch"], results[backend]):
            if backend == "onnx":
                assert [row["product_id"] for row in got] == [row["product_id"] for row in expected]
            got_scores = {row["product_id"]: row["score"] for row in got}
            for row in expected:
                assert abs(got_scores[row["product_id"]] - row["score"]) <= tolerance, (backend, row)
    for expected, got in zip(results["torch"], mixed):
        assert [row["product_id"] for row in got] == [row["product_id"] for row in expected]
    with pytest.raises(ValueError, match="backend must be one of"):
        pipeline("product-search", model=str(serving_folder), trust_remote_code=True, backend="tensorrt")


def test_onnx_backend_errors_name_the_problem(serving_folder, tmp_path):
    from transformers import pipeline

    with pytest.raises(ValueError, match="backend must be one of"):
        pipeline("product-embedding", model=str(serving_folder), trust_remote_code=True, backend="tensorrt")
    embed = pipeline("product-embedding", model=str(serving_folder), trust_remote_code=True, backend="onnx",
                     onnx_folder=str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="commercemm export"):
        embed("red mug")


def test_onnx_backend_refuses_a_depth_it_was_not_exported_at(exported_onnx, serving_folder):
    from transformers import pipeline

    embed = pipeline("product-embedding", model=str(serving_folder), trust_remote_code=True, backend="onnx")
    with pytest.raises(ValueError, match="exported at text depth 2"):
        embed("red mug", text_depth=1)


def test_sentence_transformers_loads_a_saved_folder_and_encodes_text_image_and_products(serving_folder, processor,
                                                                                         tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model = CommerceMMModel.from_pretrained(serving_folder).eval()
    encoder = sentence_transformers.SentenceTransformer(str(serving_folder), trust_remote_code=True, device="cpu")
    assert encoder.get_embedding_dimension() == model.config.projection_dim
    texts = TEXTS[:3]
    images = [random_image(40 + i) for i in range(3)]
    image_path = tmp_path / "photo.png"
    images[0].save(image_path)
    inputs = processor(images=images, text=texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = {
            "text": model.get_text_features(input_ids=inputs["input_ids"],
                                            attention_mask=inputs["attention_mask"]).pooler_output,
            "image": model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output,
            "multimodal": model.get_multimodal_features(**inputs).pooler_output,
        }
    given = {"text": texts, "image": images, "multimodal": [{"text": t, "image": i} for t, i in zip(texts, images)]}
    for kind, items in given.items():
        got = encoder.encode(items, convert_to_tensor=True, batch_size=2)
        torch.testing.assert_close(got, F.normalize(expected[kind], dim=-1), atol=1e-5, rtol=0, msg=kind)
    # an image path is an image, not a text
    torch.testing.assert_close(encoder.encode([str(image_path)], convert_to_tensor=True)[0],
                               F.normalize(expected["image"][0], dim=-1), atol=1e-5, rtol=0)
    # and the folder sentence-transformers saves loads again with the same embeddings
    encoder.save(str(tmp_path / "saved"))
    again = sentence_transformers.SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True, device="cpu")
    torch.testing.assert_close(again.encode(given["multimodal"], convert_to_tensor=True),
                               F.normalize(expected["multimodal"], dim=-1), atol=1e-5, rtol=0)
