"""The CommerceMM pipelines, run as users run them: `pipeline(task, model=folder, trust_remote_code=True)` in a fresh
process where `commercemm_hf` cannot be imported, compared with the model run in this process."""

import json

import pytest
import torch
from helpers import PIPELINE_TEXTS as TEXTS
from helpers import run_without_package, tiny_config
from torch.nn import functional as F

from commercemm_hf import CommerceMMConfig, CommerceMMModel
from commercemm_hf.hub import save_hub_folder
from commercemm_hf.pipelines import ProductIndex


PREAMBLE = """
import json, torch
from PIL import Image
from transformers import pipeline
expected = json.load(open("expected.json"))
images = [Image.open(f"image_{i}.png") for i in range(5)]
TEXTS = %r
def close(a, b):
    return bool(torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5))
""" % (TEXTS,)


def test_embedding_pipeline_from_a_fresh_process(pipeline_folders):
    result = run_without_package(PREAMBLE + """
embed = pipeline("product-embedding", model="base", trust_remote_code=True)
outputs = embed([TEXTS[0], images[1], {"image": images[2], "text": TEXTS[2]}], batch_size=2)
shallow = embed(TEXTS[0], text_depth=1)
try:
    embed({"id": "x"})
    error = ""
except ValueError as exc:
    error = str(exc)
print(json.dumps({
    "text": close(outputs[0]["text_embeds"], expected["text"]) and outputs[0]["image_embeds"] is None,
    "image": close(outputs[1]["image_embeds"], expected["image"]) and outputs[1]["text_embeds"] is None,
    "multimodal": close(outputs[2]["multimodal_embeds"], expected["multimodal"]),
    "depth": close(shallow["text_embeds"], expected["shallow_text"]),
    "error": error,
}))
""", pipeline_folders)
    assert result["text"] and result["image"] and result["multimodal"] and result["depth"]
    assert "needs an image, a text, or both" in result["error"]


def test_search_pipeline_from_a_fresh_process_indexes_saves_loads_and_grows(pipeline_folders):
    result = run_without_package(PREAMBLE + """
search = pipeline("product-search", model="base", trust_remote_code=True)
products = [{"image": image, "text": text} for image, text in zip(images, TEXTS)]
search.index_products(products[:3], product_ids=["p0", "p1", "p2"], batch_size=2)
search.add(products[3:], product_ids=["p3", "p4"])
hits = search(TEXTS[3], top_k=3)
batched = search([TEXTS[3], {"image": images[0]}], top_k=3, batch_size=2)
search.save_index("index")
reloaded = pipeline("product-search", model="base", trust_remote_code=True)
reloaded.load_index("index")
again = reloaded(TEXTS[3], top_k=3)
try:
    reloaded.add([{"image": images[0], "text": TEXTS[0]}], product_ids=["p0"])
    duplicate_error = ""
except ValueError as exc:
    duplicate_error = str(exc)
print(json.dumps({
    "ids": [hit["product_id"] for hit in hits], "scores": [hit["score"] for hit in hits],
    "batched_ids": [hit["product_id"] for hit in batched[0]], "reloaded_ids": [hit["product_id"] for hit in again],
    "duplicate_error": duplicate_error,
}))
""", pipeline_folders)
    expected = json.loads((pipeline_folders / "expected.json").read_text())
    assert result["ids"] == expected["search_ids"]
    assert result["scores"] == pytest.approx(expected["search_scores"], abs=1e-5)
    assert result["batched_ids"] == result["reloaded_ids"] == result["ids"]
    assert "already in the index" in result["duplicate_error"]


def test_search_pipeline_remote_code_builds_approximate_indexes_with_filters_from_a_fresh_process(pipeline_folders):
    pytest.importorskip("faiss")  # in the test extra, so CI runs it
    result = run_without_package(PREAMBLE + """
import os
search = pipeline("product-search", model="base", trust_remote_code=True, index_type="hnsw",
                  index_options={"efSearch": 32})
products = [{"image": image, "text": text} for image, text in zip(images, TEXTS)]
index = search.index_products(products, product_ids=["p0", "p1", "p2", "p3", "p4"])
index.upsert(index.embeddings[:2], ["p0", "p1"], [{"shelf": "top"}, {"shelf": "top"}])
hits = search(TEXTS[3], top_k=3)
top_shelf = search(TEXTS[3], top_k=3, filter={"shelf": "top"})
search.save_index("hnsw_index")
try:
    search.save_index("hnsw_index")
    overwrite_error = ""
except FileExistsError as exc:
    overwrite_error = str(exc)
search.load_index("hnsw_index")
print(json.dumps({
    "module": type(index).__module__, "factory": index.factory, "ids": [hit["product_id"] for hit in hits],
    "top_shelf": sorted(hit["product_id"] for hit in top_shelf), "overwrite_error": overwrite_error,
    "files": sorted(os.listdir("hnsw_index")), "reloaded": [hit["product_id"] for hit in search(TEXTS[3], top_k=3)],
}))
""", pipeline_folders)
    expected = json.loads((pipeline_folders / "expected.json").read_text())
    assert "commercemm_hf" not in result["module"] and result["factory"] == "HNSW32,Flat"
    assert result["ids"] == result["reloaded"] == expected["search_ids"]
    assert result["top_shelf"] == ["p0", "p1"] and "overwrite=True" in result["overwrite_error"]
    assert result["files"] == ["product_index.faiss", "product_index.json", "product_vectors.safetensors"]


def test_categorization_pipeline_from_a_fresh_process(pipeline_folders):
    result = run_without_package(PREAMBLE + """
classify = pipeline("product-categorization", model="categorization", trust_remote_code=True)
both = classify({"image": images[0], "text": TEXTS[0]}, top_k=3)
many = classify([TEXTS[1], images[2], {"image": images[0], "text": TEXTS[0]}], top_k=2, batch_size=2)
print(json.dumps({"labels": [row["label"] for row in both], "scores": [row["score"] for row in both],
                  "many": [[row["label"] for row in rows] for rows in many]}))
""", pipeline_folders)
    expected = json.loads((pipeline_folders / "expected.json").read_text())
    assert result["labels"] == expected["categorization"]
    assert sum(result["scores"]) == pytest.approx(1.0, abs=1e-5)
    assert result["many"][2] == expected["categorization"][:2] and all(len(rows) == 2 for rows in result["many"])


def test_saved_config_names_the_pipelines(pipeline_folders):
    base = json.loads((pipeline_folders / "base" / "config.json").read_text())
    assert set(base["custom_pipelines"]) == {"product-embedding", "product-search"}
    assert base["custom_pipelines"]["product-search"]["pt"] == ["AutoModel"]
    head = json.loads((pipeline_folders / "categorization" / "config.json").read_text())
    assert set(head["custom_pipelines"]) == {"product-categorization"}
    assert (pipeline_folders / "base" / "pipeline_commercemm_inputs.py").exists()
    for name in ("index", "index_faiss", "index_files"):  # the index and the files it imports travel
        assert (pipeline_folders / "base" / f"pipeline_commercemm_{name}.py").exists()
    assert (pipeline_folders / "base" / "pipeline_commercemm_shards.py").exists()


def test_faiss_and_torch_search_give_the_same_top_k():
    faiss = pytest.importorskip("faiss")  # in the test extra, so CI runs it
    generator = torch.Generator().manual_seed(0)
    products = F.normalize(torch.randn(500, 32, generator=generator), dim=-1)
    queries = F.normalize(torch.randn(40, 32, generator=generator), dim=-1)
    ids = [f"p{i}" for i in range(500)]
    results = {}
    for backend in ("torch", "faiss"):
        index = ProductIndex(32, backend=backend)
        index.add(products[:300], ids[:300])
        index.add(products[300:], ids[300:])  # grown without re-embedding
        results[backend] = index.search(queries, top_k=10)
    torch.testing.assert_close(results["faiss"][0], results["torch"][0], atol=1e-5, rtol=0)
    assert torch.equal(results["faiss"][1].long(), results["torch"][1].long())
    # the faiss backend really searched with FAISS: its scores are FAISS's to the last bit (torch's differ in it)
    scores, rows = faiss.knn(queries.numpy(), products.numpy(), 10, metric=faiss.METRIC_INNER_PRODUCT)
    assert torch.equal(results["faiss"][0], torch.from_numpy(scores))
    assert torch.equal(results["faiss"][1].long(), torch.from_numpy(rows).long())


def test_index_rejects_corrupt_files_and_bad_shapes(tmp_path):
    index = ProductIndex(8, backend="torch")
    with pytest.raises(ValueError, match="Expected"):
        index.add(torch.zeros(2, 4), ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        index.search(torch.zeros(1, 8), top_k=1)
    index.add(F.normalize(torch.randn(3, 8), dim=-1), ["a", "b", "c"])
    index.save(str(tmp_path))
    data = (tmp_path / "product_vectors.safetensors").read_bytes()  # the vectors file (was product_embeddings.f32)
    (tmp_path / "product_vectors.safetensors").write_bytes(data[:-4])
    with pytest.raises(ValueError, match="corrupt"):
        ProductIndex.load(str(tmp_path))


def test_categorization_pipeline_refuses_a_model_without_labels(tmp_path, processor, tokenizer):
    from transformers import pipeline

    model = CommerceMMModel(tiny_config(vocab_size=len(tokenizer)))
    save_hub_folder(model, processor, tmp_path / "base")
    classify = pipeline("product-categorization", model=str(tmp_path / "base"), trust_remote_code=True)
    with pytest.raises(ValueError, match="no label set"):
        classify("red mug")
    assert isinstance(CommerceMMConfig, type)
