"""Where rows come from, for `loading`: a `datasets` object, a folder written by `save_to_disk`, a JSON Lines /
JSON / CSV / TSV / Parquet file, a folder of split files or an image folder with metadata, shards, any other folder
`datasets.load_dataset` reads, or a Hub dataset name (see `loading`'s module docstring). `read_source` returns the
rows as read, the folder relative image paths start from, and a description for messages; checking the rows is
`loading`'s job.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

from .reading import TEXT_FORMATS, data_folder_layout, image_folder_rows, read_data_file
from .shards import as_stream, read_shards, shard_files, shards_folder


FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _read_text_file(path: Path, split: str | None, string_columns: set[str], load_kwargs: dict) -> Dataset:
    """A JSON Lines / JSON / CSV / TSV file through `reading.read_data_file` (no type inference), sliced like
    `datasets` slices a split ("train[:100]", "train[10%:]")."""
    field = load_kwargs.get("field")
    ignored = sorted(set(load_kwargs) - {"field", "cache_dir", "keep_in_memory", "num_proc"})
    if ignored:
        warnings.warn(f"Ignoring {ignored} for {path}: .jsonl/.json/.csv/.tsv files are read here without "
                      "datasets' builders (see commercemm_hf/data/reading.py).", stacklevel=5)
    rows = read_data_file(path, string_columns, field=field)
    if split is None or split == "train":
        return rows
    instruction = datasets.ReadInstruction.from_spec(split)
    absolute = instruction.to_absolute({"train": len(rows)})
    if any(part.splitname != "train" for part in absolute):
        raise ValueError(f"A single file {path} has only the split 'train' (optionally sliced), not {split!r}.")
    return datasets.concatenate_datasets([rows.select(range(part.from_, part.to)) for part in absolute])


def read_source(source, split: str | None, load_kwargs: dict, string_columns: set[str],
                 streaming: bool = False) -> tuple[Dataset | DatasetDict | IterableDataset, Path, str]:
    """(dataset or dataset dict, folder that relative image paths are resolved against, description)."""
    if isinstance(source, (Dataset, DatasetDict)):
        return (source[split] if split is not None and isinstance(source, DatasetDict) else source), Path.cwd(), \
            f"<{type(source).__name__}>"
    if isinstance(source, IterableDataset):
        return source, Path.cwd(), "<IterableDataset>"
    if isinstance(source, IterableDatasetDict):
        return as_stream(source, split), Path.cwd(), "<IterableDatasetDict>"
    shards = None if isinstance(source, (str, os.PathLike)) and Path(os.fspath(source)).expanduser().is_dir() and \
        (_is_saved_dataset(Path(os.fspath(source)).expanduser()) or
         data_folder_layout(Path(os.fspath(source)).expanduser())) else shard_files(source)
    if shards is not None:
        if split is not None and split.split("[", 1)[0] != "train":
            raise ValueError(f"Shards are one split, 'train', not {split!r}.")
        description = os.fspath(source) if not isinstance(source, (list, tuple)) else \
            f"{len(shards)} shards ({shards[0]}, ...)"
        return read_shards(shards, string_columns, load_kwargs, streaming), shards_folder(shards), description
    text = os.fspath(source)
    if text.startswith("file://"):
        text = text[len("file://"):]
    path = Path(text).expanduser()
    if streaming and (path.is_file() or path.is_dir() and not _is_saved_dataset(path)
                      and data_folder_layout(path) is None):
        if path.is_file() and path.suffix.lower() in (".parquet", *TEXT_FORMATS):
            return read_shards([path], string_columns, load_kwargs, True), path.resolve().parent, str(path)
        if path.is_dir():
            return as_stream(datasets.load_dataset(str(path), split=split, streaming=True, **load_kwargs), split), \
                path.resolve(), str(path)
    if path.is_dir():
        if _is_saved_dataset(path):
            ignored = sorted(set(load_kwargs) - {"keep_in_memory", "storage_options"})
            if ignored:
                warnings.warn(f"Ignoring {ignored} for a dataset saved with save_to_disk ({path}).", stacklevel=4)
            loaded = datasets.load_from_disk(str(path), **{key: value for key, value in load_kwargs.items()
                                                           if key not in ignored})
            if split is not None and isinstance(loaded, DatasetDict):
                if split not in loaded:
                    raise ValueError(f"{path} has splits {sorted(loaded)}, not {split!r}.")
                loaded = loaded[split]
            return loaded, path.resolve(), str(path)
        layout = data_folder_layout(path)
        if layout is None:
            return datasets.load_dataset(str(path), split=split, **load_kwargs), path.resolve(), str(path)
        kind, files = layout
        wanted = None if split is None else split.split("[", 1)[0]  # "train[:10]" -> "train"
        if wanted is not None and wanted not in files:
            raise ValueError(f"{path} has splits {sorted(files)}, not {wanted!r}.")
        loaded = {}
        for name, file in files.items():
            if wanted in (None, name):  # each file is one split, read as the "train" split of that file
                rows = _read_text_file(file, None if split is None else "train" + split[len(wanted):],
                                       string_columns, load_kwargs)
                loaded[name] = image_folder_rows(rows, file) if kind == "image folder" else rows
        return (DatasetDict(loaded) if split is None else loaded[wanted]), path.resolve(), str(path)
    if path.is_file():
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"Cannot read {path}: expected one of {sorted(FILE_BUILDERS)} (or a folder).")
        if builder == "parquet":  # typed columns: nothing to infer
            loaded = datasets.load_dataset(builder, data_files=str(path), split=split or "train", **load_kwargs)
        else:
            loaded = _read_text_file(path, split, string_columns, load_kwargs)
        return loaded, path.resolve().parent, str(path)
    if isinstance(source, os.PathLike) or text.startswith((".", "/", "~")) or path.suffix.lower() in FILE_BUILDERS:
        raise FileNotFoundError(f"No such file or folder: {text}")
    if streaming:
        load_kwargs = {**load_kwargs, "streaming": True}
    return datasets.load_dataset(text, split=split, **load_kwargs), Path.cwd(), text
