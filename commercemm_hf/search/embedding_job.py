"""`commercemm embed`: embed a product catalog once, to safetensors shards that indexes and vector stores read.

Products come from anything `commercemm_hf.data.load_image_text_dataset` reads (JSON Lines / CSV / Parquet files with
image paths, saved datasets, image folders, Hub datasets), or in Python from any `datasets.Dataset` or streaming
`IterableDataset` with `image` and/or `text` columns. Each shard holds `--shard-size` consecutive products: their
text / image / multimodal embeddings, their ids and their metadata columns (format: `pipeline_commercemm_shards.py`).

- **Resumable**: a shard is written to a temporary file and renamed, so after a kill the rerun of the same command
  embeds only the shards that are missing; the manifest refuses a rerun with other settings.
- **Several processes**: under `accelerate launch` (or `torchrun`) process `r` of `w` embeds shards `r, r + w, ...`,
  each on its own device; the union is what one process writes.

    commercemm embed outputs/demo/commercemm-tiny-demo --products products.jsonl --product-id-column sku \\
        --metadata-columns category,brand --kinds multimodal,text --output-dir embeddings/
    accelerate launch --num_processes 4 -m commercemm_hf embed ...      # the same, split over 4 processes

then `pipeline("product-search", model=..., index_type="hnsw").index_from_shards("embeddings/")`, or
`commercemm_hf.search.vector_store.export_to_qdrant("embeddings/", ...)`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..factory import check_model_folder
from ..pipelines.pipeline_commercemm_index import metadata_value
from ..pipelines.pipeline_commercemm_inputs import base_model, collate, embed_rows, encode_item, normalize_item
from ..pipelines.pipeline_commercemm_shards import (
    EMBEDDING_KINDS,
    SHARDS_FORMAT,
    SHARDS_MANIFEST,
    SHARDS_VERSION,
    shard_numbers,
    shard_path,
)


def _write_json_atomically(path: Path, value: dict):
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(value, stream, indent=2)
    os.replace(staging, path)


def _checked_manifest(output: Path, wanted: dict) -> dict:
    """The job's manifest: written on the first run, compared on a rerun (a resume must use the same settings)."""
    path = output / SHARDS_MANIFEST
    if path.exists():
        manifest = json.loads(path.read_text(encoding="utf-8"))
        changed = {key: (manifest.get(key), value) for key, value in wanted.items() if manifest.get(key) != value}
        if changed:
            raise ValueError(f"{output} holds an embedding job with other settings {changed} (stored, now): resume "
                             "with the same ones, or write to another --output-dir.")
        return manifest
    manifest = {"format": SHARDS_FORMAT, "version": SHARDS_VERSION, **wanted, "complete": False}
    _write_json_atomically(path, manifest)
    return manifest


def _launched_on_cpus() -> bool:
    """Several processes (accelerate launch / torchrun set WORLD_SIZE) and no accelerator: accelerate then needs
    `cpu=True` to make them one gloo group, else each process takes itself for the only one."""
    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator


def _row_item(row: dict, position: int) -> dict:
    item = {"image": row.get("image"), "text": row.get("text")}
    if isinstance(item["text"], str) and not item["text"].strip():
        item["text"] = None
    try:
        return normalize_item(item)
    except ValueError as error:
        raise ValueError(f"Product row {position}: {error}") from error


def _embed_shard(model, tokenizer, image_processor, rows: list[dict], first_row: int, kinds, batch_size: int,
                 id_column: str | None, metadata_columns, depths: dict, device) -> tuple[dict, dict]:
    config = base_model(model).config
    vectors = {kind: [] for kind in kinds}
    for start in range(0, len(rows), batch_size):
        batch_rows = rows[start:start + batch_size]
        items = [_row_item(row, first_row + start + offset) for offset, row in enumerate(batch_rows)]
        batch = collate([encode_item(item, tokenizer, image_processor, config) for item in items],
                        tokenizer.pad_token_id)
        batch = {key: value.to(device) for key, value in batch.items()}
        with torch.no_grad():
            embeds = embed_rows(base_model(model), batch, depths)
        for kind in kinds:
            vectors[kind].append(embeds[kind].float().cpu())
    tensors = {}
    for kind in kinds:
        values = torch.cat(vectors[kind])
        present = torch.isfinite(values).all(dim=1)
        tensors[kind] = torch.where(present[:, None], values, torch.zeros_like(values)).numpy()
        tensors[f"has_{kind}"] = present.numpy().astype(np.uint8)
    ids, metadata = [], []
    for offset, row in enumerate(rows):
        position = first_row + offset
        product_id = row.get(id_column) if id_column else None
        if id_column and (product_id is None or not str(product_id).strip()):
            raise ValueError(f"Product row {position} has no {id_column!r}.")
        ids.append(str(product_id) if id_column else str(position))
        metadata.append({column: value for column in metadata_columns
                         if (value := metadata_value(row.get(column), column, f"product row {position}")) is not None})
    header = {"product_ids": json.dumps(ids), "metadata": json.dumps(metadata), "first_row": str(first_row),
              "format": SHARDS_FORMAT}
    return tensors, header


def _save_shard(path: str, tensors: dict, header: dict):
    from safetensors.numpy import save_file

    handle, staging = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    os.close(handle)
    try:
        save_file(tensors, staging, metadata=header)
        os.replace(staging, path)  # a shard file that exists is complete
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise


def _shards_of(dataset, shard_size: int):
    """`(shard number, first row, rows)` for every shard of a Dataset (by slicing) or an IterableDataset (by
    reading it through once)."""
    if hasattr(dataset, "__len__"):
        for shard in range((len(dataset) + shard_size - 1) // shard_size):
            yield shard, shard * shard_size, lambda s=shard: list(
                dataset.select(range(s * shard_size, min(len(dataset), (s + 1) * shard_size))))
        return
    rows, shard = [], 0
    for row in dataset:
        rows.append(row)
        if len(rows) == shard_size:
            yield shard, shard * shard_size, (lambda r=rows: r)
            rows, shard = [], shard + 1
    if rows:
        yield shard, shard * shard_size, (lambda r=rows: r)


def embed_products(model_path, dataset, output_dir, kinds=("multimodal",), batch_size: int = 32,
                   shard_size: int = 10_000, id_column: str | None = "product_id", metadata_columns=(),
                   source: str | None = None, progress: bool = True, **depths) -> dict:
    """Embed `dataset` (rows with `image` and/or `text`, an id column, metadata columns) into shards in
    `output_dir`, skipping the shards that are already there; returns the manifest.

    Example:
        >>> import tempfile
        >>> from datasets import Dataset
        >>> from PIL import Image
        >>> from commercemm_hf import create_model_and_processor
        >>> from commercemm_hf.hub import save_hub_folder
        >>> from commercemm_hf.search.embedding_job import embed_products
        >>> model, processor = create_model_and_processor("tiny", texts=["red mug", "blue lamp"] * 5, vocab_size=300)
        >>> folder = save_hub_folder(model, processor, tempfile.mkdtemp())
        >>> rows = Dataset.from_dict({"product_id": ["p1", "p2"], "text": ["red mug", "blue lamp"],
        ...                           "image": [Image.new("RGB", (64, 64), "red"), Image.new("RGB", (64, 64), "blue")],
        ...                           "category": ["mugs", "lamps"]})
        >>> manifest = embed_products(folder, rows, tempfile.mkdtemp(), kinds=("multimodal", "text"),
        ...                           metadata_columns=("category",), progress=False)  # doctest: +ELLIPSIS
        process 0: embedded 2 products in ... s into ...
        >>> manifest["kinds"], manifest["dim"], manifest["num_shards"], manifest["complete"]
        (['multimodal', 'text'], 128, 1, True)
    """
    from accelerate import PartialState
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoProcessor

    kinds = tuple(dict.fromkeys(kinds))
    unknown = sorted(set(kinds) - set(EMBEDDING_KINDS))
    if unknown or not kinds:
        raise ValueError(f"kinds must be among {EMBEDDING_KINDS}, got {list(kinds)}.")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be positive, got {shard_size} and {batch_size}.")
    columns = getattr(dataset, "column_names", None)
    if columns is not None:
        missing = [column for column in (id_column, *metadata_columns) if column and column not in columns]
        if missing:
            raise ValueError(f"The products have no columns {missing} (columns: {columns}).")
    state = PartialState(cpu=_launched_on_cpus())
    check_model_folder(str(model_path))  # a broken folder named, not a TypeError from transformers
    model = AutoModel.from_pretrained(model_path).to(state.device).eval()
    processor = AutoProcessor.from_pretrained(model_path)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    wanted = {"kinds": list(kinds), "dim": base_model(model).config.projection_dim, "shard_size": shard_size,
              "model": str(model_path), "source": source, "id_column": id_column,
              "metadata_columns": list(metadata_columns), "depths": depths}
    if state.is_main_process:
        _checked_manifest(output, wanted)
    state.wait_for_everyone()
    manifest = _checked_manifest(output, wanted)
    done = set(shard_numbers(output))
    total = len(dataset) if hasattr(dataset, "__len__") else None
    bar = tqdm(total=total, unit="product", desc=f"embedding (process {state.process_index + 1}/{state.num_processes})",
               disable=not progress or not state.is_local_main_process)
    started, embedded = time.perf_counter(), 0
    for shard, first_row, rows in _shards_of(dataset, shard_size):
        if shard % state.num_processes != state.process_index or shard in done:
            if total is not None and shard % state.num_processes == state.process_index:
                bar.update(min(shard_size, total - first_row))
            continue
        rows = rows()
        tensors, header = _embed_shard(model, processor.tokenizer, processor.image_processor, rows, first_row, kinds,
                                       batch_size, id_column, metadata_columns, depths, state.device)
        _save_shard(shard_path(output, shard), tensors, header)
        embedded += len(rows)
        bar.update(len(rows))
    bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        numbers = shard_numbers(output)
        manifest["complete"] = bool(numbers) and numbers == list(range(numbers[-1] + 1))
        manifest["num_shards"] = len(numbers)
        _write_json_atomically(output / SHARDS_MANIFEST, manifest)
    print(f"process {state.process_index}: embedded {embedded} products in {time.perf_counter() - started:.1f} s "
          f"into {output}", flush=True)
    return manifest


def add_embed_parser(commands):
    from ..cli import add_flag

    embed = commands.add_parser("embed", help="embed a product catalog into safetensors shards (resumable, "
                                              "several processes under accelerate launch)")
    embed.add_argument("model", help="a CommerceMM folder")
    add_flag(embed, "--products", required=True, help="products: .jsonl/.csv/.parquet (image paths relative to "
                                                         "the file), saved dataset, image folder or Hub dataset name")
    add_flag(embed, "--output-dir", required=True, help="where the shards go (rerun the command to resume)")
    add_flag(embed, "--kinds", default="multimodal", help="comma-separated: multimodal,text,image")
    add_flag(embed, "--split", default=None)
    add_flag(embed, "--image-column", default="image", help="'none' for text-only products")
    add_flag(embed, "--text-column", default="text", help="'none' for image-only products")
    add_flag(embed, "--product-id-column", default=None, help="default: the row number")
    add_flag(embed, "--metadata-columns", default="", help="comma-separated string columns kept for filters")
    add_flag(embed, "--on-bad-rows", choices=("skip", "raise"), default="skip")
    add_flag(embed, "--batch-size", type=int, default=32)
    add_flag(embed, "--shard-size", type=int, default=10_000)
    embed.set_defaults(run=run_embed_command)
    return embed


def run_embed_command(args) -> dict:
    from ..data.loading import load_image_text_dataset

    image_column = None if args.image_column.lower() == "none" else args.image_column
    text_column = None if args.text_column.lower() == "none" else args.text_column
    metadata_columns = [column for column in args.metadata_columns.split(",") if column]
    rows, report = load_image_text_dataset(args.products, split=args.split or "train", image_column=image_column,
                                           text_column=text_column, product_id_column=args.product_id_column,
                                           on_bad_rows=args.on_bad_rows)
    print(report, flush=True)
    return embed_products(args.model, rows, args.output_dir, kinds=args.kinds.split(","), batch_size=args.batch_size,
                          shard_size=args.shard_size, id_column="product_id" if args.product_id_column else None,
                          metadata_columns=metadata_columns, source=str(args.products))


__all__ = ["add_embed_parser", "embed_products", "run_embed_command"]
