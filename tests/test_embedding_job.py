"""`commercemm embed` as users run it (subprocesses): shards with ids and metadata, resume after a kill -9, two
processes under `accelerate launch`, and product-search built from the shards without re-embedding."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import EMBED_CATEGORIES as CATEGORIES
from helpers import EMBED_PRODUCTS as NUM_PRODUCTS
from helpers import EMBED_SHARD_SIZE as SHARD_SIZE
from helpers import embed_command, shard_contents

from commercemm_hf.pipelines.pipeline_commercemm_shards import read_manifest, shard_numbers


def assert_same_shards(left, right):
    assert sorted(left) == sorted(right)
    for number in left:
        (tensors, header), (other_tensors, other_header) = left[number], right[number]
        assert header == other_header
        for name in tensors:
            np.testing.assert_allclose(tensors[name], other_tensors[name], atol=1e-5, rtol=0)


def test_shards_hold_every_product_with_ids_metadata_and_each_kind(embedding_job, reference_shards):
    work, products, _ = embedding_job
    manifest = read_manifest(work / "reference")
    assert manifest["complete"] and manifest["kinds"] == ["multimodal", "text", "image"] and manifest["dim"] == 16
    assert len(reference_shards) == NUM_PRODUCTS // SHARD_SIZE
    ids = [pid for number in sorted(reference_shards) for pid in json.loads(reference_shards[number][1]["product_ids"])]
    metadata = [m for number in sorted(reference_shards) for m in json.loads(reference_shards[number][1]["metadata"])]
    assert ids == list(products["product_id"])
    assert metadata == [{"category": CATEGORIES[i % 3]} for i in range(NUM_PRODUCTS)]
    for tensors, _ in reference_shards.values():
        for kind in ("multimodal", "text", "image"):
            assert tensors[kind].shape == (SHARD_SIZE, 16) and tensors[f"has_{kind}"].all()
            np.testing.assert_allclose(np.linalg.norm(tensors[kind], axis=1), 1.0, atol=1e-5)


def test_a_killed_job_resumes_and_embeds_only_the_missing_shards(embedding_job, reference_shards):
    work, _, env = embedding_job
    output = work / "killed"
    process = subprocess.Popen(embed_command(work, output), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (output.exists() and len(shard_numbers(output)) >= 2):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    survived = {number: os.stat(output / f"shard-{number:06d}.safetensors").st_mtime_ns
                for number in shard_numbers(output)}
    assert 2 <= len(survived) < NUM_PRODUCTS // SHARD_SIZE, "the kill came too late to test a resume"
    assert not read_manifest(output)["complete"]
    result = subprocess.run(embed_command(work, output), env=env, check=True, capture_output=True, text=True,
                            timeout=600)
    assert f"embedded {NUM_PRODUCTS - SHARD_SIZE * len(survived)} products" in result.stdout
    assert all(os.stat(output / f"shard-{n:06d}.safetensors").st_mtime_ns == t for n, t in survived.items())
    assert read_manifest(output)["complete"]
    assert not [name for name in os.listdir(output) if name.startswith(".")]  # no temporary files left
    assert_same_shards(shard_contents(output), reference_shards)
    changed = embed_command(work, output)
    changed[changed.index("--shard-size") + 1] = "5"
    refused = subprocess.run(changed, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "other settings" in refused.stderr


def test_two_processes_under_accelerate_launch_write_the_same_shards(embedding_job, reference_shards):
    work, _, env = embedding_job
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m")
    result = subprocess.run(embed_command(work, work / "two", *launcher), env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 1: embedded" in result.stdout and "process 0: embedded" in result.stdout
    assert_same_shards(shard_contents(work / "two"), reference_shards)
    assert read_manifest(work / "two")["complete"]


def test_product_search_builds_its_index_from_the_shards_without_re_embedding(embedding_job, reference_shards):
    from transformers import pipeline

    work, products, _ = embedding_job
    search = pipeline("product-search", model=str(work / "model"), trust_remote_code=True)
    items = [{"image": row["image"], "text": row["text"]} for row in products]
    search.index_products(items, product_ids=list(products["product_id"]))
    embedded = search("red ceramic mug", top_k=5)
    fast = pipeline("product-search", model=str(work / "model"), trust_remote_code=True, index_type="hnsw")
    index = fast.index_from_shards(work / "reference")
    assert len(index) == NUM_PRODUCTS and index.is_approximate
    from_shards = fast("red ceramic mug", top_k=5)
    assert [hit["product_id"] for hit in from_shards] == [hit["product_id"] for hit in embedded]
    assert [hit["score"] for hit in from_shards] == pytest.approx([hit["score"] for hit in embedded], abs=1e-5)
    mugs = fast("red ceramic mug", top_k=5, filter={"category": "mugs"})
    assert len(mugs) == 5 and all(index.metadata_of(hit["product_id"]) == {"category": "mugs"} for hit in mugs)
    text_index = fast.index_from_shards(work / "reference", product_kind="text")
    assert text_index.product_kind == "text" and len(text_index) == NUM_PRODUCTS
    fast.save_index(work / "saved")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fast.save_index(work / "saved")
    fast.save_index(work / "saved", overwrite=True)


def test_demo_catalog_shards_exported_to_qdrant_give_the_faiss_flat_top_k(embedding_job, tmp_path):
    """A real Qdrant (qdrant-client's embedded local mode, on disk, reopened) against FAISS's exact index."""
    pytest.importorskip("faiss")
    qdrant_client = pytest.importorskip("qdrant_client")  # in the test extra, so CI runs it
    from commercemm_hf.data import build_demo_catalog
    from commercemm_hf.pipelines import ProductIndex
    from commercemm_hf.search import read_embedding_shards
    from commercemm_hf.search.embedding_job import embed_products
    from commercemm_hf.search.vector_store import export_to_qdrant, qdrant_search

    work, _, _ = embedding_job
    demo = build_demo_catalog(num_products=60, seed=0, image_size=32)["train"]
    products = demo.select_columns(["image", "text", "product_id", "category", "subcategory"])
    embed_products(work / "model", products, tmp_path / "shards", kinds=("multimodal", "text"), batch_size=8,
                   shard_size=16, metadata_columns=("category", "subcategory"), progress=False)
    client = qdrant_client.QdrantClient(path=str(tmp_path / "qdrant"))
    assert export_to_qdrant(tmp_path / "shards", client, "products") == len(products)
    assert export_to_qdrant(tmp_path / "shards", client, "products") == len(products)  # re-export: an update
    client.close()
    client = qdrant_client.QdrantClient(path=str(tmp_path / "qdrant"))  # what was written is on disk
    assert client.count("products").count == len(products)

    flat = ProductIndex(16, backend="faiss")
    for vectors, ids, metadata in read_embedding_shards(tmp_path / "shards", "multimodal"):
        flat.add(vectors, ids, metadata)
    queries = np.concatenate([vectors for vectors, _, _ in read_embedding_shards(tmp_path / "shards", "text")])[:12]
    for filter in (None, {"category": "home"}, {"subcategory": ["mug", "lamp", "backpack"]}):
        expected = flat.query(queries, top_k=10, filter=filter)
        found = qdrant_search(client, "products", queries, top_k=10, filter=filter)
        assert [[h["product_id"] for h in hits] for hits in found] == [[h["product_id"] for h in hits]
                                                                      for hits in expected]
        assert [h["score"] for hits in found for h in hits] == pytest.approx(
            [h["score"] for hits in expected for h in hits], abs=1e-4)
        assert all(len(hits) == min(10, len(flat.query(queries[:1], 100, filter)[0])) for hits in found)
    # a tensor that requires grad (straight from get_*_features) is taken as it is
    from_tensor = qdrant_search(client, "products", torch.tensor(queries[:2], requires_grad=True), top_k=3)
    assert from_tensor == qdrant_search(client, "products", queries[:2], top_k=3)
    with pytest.raises(ValueError, match="not 32-dim cosine"):  # a collection of another size is refused
        client.create_collection("small", vectors_config=qdrant_client.models.VectorParams(
            size=8, distance=qdrant_client.models.Distance.COSINE))
        other = tmp_path / "other"
        other.mkdir()
        manifest = json.loads((tmp_path / "shards" / "embedding_job.json").read_text())
        (other / "embedding_job.json").write_text(json.dumps({**manifest, "dim": 32}))
        export_to_qdrant(other, client, "small")
    client.close()


def test_a_streaming_dataset_gives_the_same_shards(embedding_job, reference_shards, tmp_path):
    from commercemm_hf.search.embedding_job import embed_products

    work, products, _ = embedding_job
    stream = products.to_iterable_dataset(num_shards=3)  # no len(): read through once
    embed_products(work / "model", stream, tmp_path / "stream", kinds=("multimodal", "text", "image"),
                   batch_size=2, shard_size=SHARD_SIZE, metadata_columns=("category",), progress=False,
                   source=str(work / "products"))
    streamed = shard_contents(tmp_path / "stream")
    assert sorted(streamed) == sorted(reference_shards)
    for number in reference_shards:  # the manifest's model path differs from the CLI's; the shards do not
        for name, value in reference_shards[number][0].items():
            np.testing.assert_allclose(streamed[number][0][name], value, atol=1e-5, rtol=0)
        assert streamed[number][1] == reference_shards[number][1]
