"""The embedding shards that `commercemm embed` writes and `product-search` / vector-store exports read.

A shard folder holds `embedding_job.json` (format, version, kinds, dim, shard size, model and source) and
`shard-000000.safetensors`, `shard-000001.safetensors`, ...: shard `s` holds rows `[s * shard_size, (s + 1) *
shard_size)` of the products, with one float32 tensor `(rows, dim)` per embedding kind (`text`, `image`,
`multimodal`), a uint8 `has_<kind>` per kind (0 where the product lacks that kind's modalities; its vector is then
zeros), and in the safetensors header the JSON lists `product_ids` and `metadata` (one dict of strings per row).
Each shard is written to a temporary name and renamed, so a shard file that exists is complete.

This file travels as Hugging Face remote code: numpy, torch and safetensors (transformers' own dependency) only.
"""

import json
import os
import re
import warnings

import numpy as np


SHARDS_FORMAT = "commercemm-embeddings"
SHARDS_VERSION = 1
SHARDS_MANIFEST = "embedding_job.json"
EMBEDDING_KINDS = ("text", "image", "multimodal")
_SHARD_NAME = re.compile(r"^shard-(\d{6})\.safetensors$")


def shard_path(folder: str, shard: int) -> str:
    return os.path.join(os.fspath(folder), f"shard-{shard:06d}.safetensors")


def read_manifest(folder: str) -> dict:
    path = os.path.join(os.fspath(folder), SHARDS_MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder} holds no embedding shards ({SHARDS_MANIFEST} is missing): write them with "
                                "`commercemm embed`.")
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    if not isinstance(manifest, dict) or manifest.get("format") != SHARDS_FORMAT or \
            manifest.get("version") != SHARDS_VERSION:
        raise ValueError(f"{path} is not a version-{SHARDS_VERSION} {SHARDS_FORMAT!r} manifest.")
    return manifest


def shard_numbers(folder: str) -> list[int]:
    return sorted(int(match.group(1)) for match in map(_SHARD_NAME.match, os.listdir(folder)) if match)


def read_shard(path: str, kinds=EMBEDDING_KINDS, dim: int | None = None) -> dict:
    """`{"product_ids", "metadata", "first_row", <kind>: (rows, dim) array, "has_<kind>": bool array}` of one shard,
    with every shape checked."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="np") as handle:
            header = handle.metadata() or {}
            names = set(handle.keys())
            missing = [name for kind in kinds for name in (kind, f"has_{kind}") if name not in names]
            if missing:
                raise ValueError(f"Shard {path} lacks the tensors {missing}.")
            shard = {name: handle.get_tensor(name) for kind in kinds for name in (kind, f"has_{kind}")}
        shard["product_ids"] = json.loads(header["product_ids"])
        shard["metadata"] = json.loads(header["metadata"])
        shard["first_row"] = int(header["first_row"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"Embedding shard {path} is corrupt or not a CommerceMM shard: {error}") from error
    rows = len(shard["product_ids"])
    if len(shard["metadata"]) != rows:
        raise ValueError(f"Shard {path} has {rows} ids but {len(shard['metadata'])} metadata entries.")
    for kind in kinds:
        vectors, present = shard[kind], shard[f"has_{kind}"]
        if vectors.ndim != 2 or vectors.shape[0] != rows or (dim is not None and vectors.shape[1] != dim) or \
                present.shape != (rows,):
            raise ValueError(f"Shard {path}: {kind} embeddings {vectors.shape} / has_{kind} {present.shape} do not "
                             f"match its {rows} ids{'' if dim is None else f' and dim {dim}'}.")
        shard[f"has_{kind}"] = present.astype(bool)
        shard[kind] = vectors.astype(np.float32, copy=False)
    return shard


def read_embedding_shards(folder: str, kind: str = "multimodal", expected_dim: int | None = None):
    """Yield `(vectors, product_ids, metadata)` of each shard in order, keeping the products that have `kind`; warns
    once with the count of those skipped."""
    folder = os.fspath(folder)
    manifest = read_manifest(folder)
    if kind not in manifest["kinds"]:
        raise ValueError(f"The shards in {folder} hold {manifest['kinds']} embeddings, not {kind!r}.")
    if expected_dim is not None and manifest["dim"] != expected_dim:
        raise ValueError(f"The shards in {folder} hold {manifest['dim']}-dim embeddings; this index needs "
                         f"{expected_dim} (embedded by another model?).")
    numbers = shard_numbers(folder)
    if not numbers:
        raise ValueError(f"{folder} has a manifest but no shards yet.")
    gaps = sorted(set(range(numbers[-1] + 1)) - set(numbers))
    if gaps or not manifest.get("complete"):
        warnings.warn(f"The embedding job in {folder} is not finished (missing shards {gaps[:10]}"
                      f"{' ...' if len(gaps) > 10 else ''}): rerun `commercemm embed` to complete it.", stacklevel=2)
    skipped = 0
    for number in numbers:
        shard = read_shard(shard_path(folder, number), (kind,), manifest["dim"])
        keep = shard[f"has_{kind}"]
        skipped += int((~keep).sum())
        rows = np.flatnonzero(keep).tolist()
        yield shard[kind][keep], [shard["product_ids"][row] for row in rows], [shard["metadata"][row] for row in rows]
    if skipped:
        warnings.warn(f"{skipped} products in {folder} have no {kind} embedding (they lack its modalities) and "
                      "were not indexed.", stacklevel=2)


__all__ = ["EMBEDDING_KINDS", "SHARDS_FORMAT", "SHARDS_MANIFEST", "SHARDS_VERSION", "read_embedding_shards",
           "read_manifest", "read_shard", "shard_numbers", "shard_path"]
