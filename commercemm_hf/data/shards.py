"""Sources as catalogs store them: glob patterns and lists of shards, WebDataset tars, `file://` URLs, and streams.

Used by `loading`: `shard_files(source)` turns a glob (`data/*.parquet`), a list of paths, a `file://` URL or a
folder of shards into the list of files, `read_stream(...)` turns any source into a `datasets.IterableDataset` read
shard by shard (memory O(one shard), never O(rows)).

* Parquet shards: `datasets`' parquet builder (typed columns, streamed by record batch).
* WebDataset shards (`.tar`, one file, a folder or a glob): `datasets`' webdataset builder; a sample's files become
  columns named by their extension (`jpg`, `txt`, `json`, ...), so pass e.g. `image_column="jpg"`, `text_column="txt"`.
* JSON Lines / JSON / CSV / TSV shards: `reading.read_data_file`, one shard at a time (ids and texts as written).
* Remote URLs (`hf://`, `s3://`, `gs://`, ...) other than `file://` are handed to `datasets` as they are (fsspec).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("part-0.jsonl", "part-1.jsonl"):
    ...     _ = (folder / name).write_text('{"text": "mug"}\\n')
    >>> [path.name for path in shard_files(str(folder / "part-*.jsonl"))]
    ['part-0.jsonl', 'part-1.jsonl']
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

from .reading import TEXT_FORMATS, read_data_file


SHARD_BUILDERS = {".parquet": "parquet", ".tar": "webdataset", **dict.fromkeys(TEXT_FORMATS, "text")}
FILE_COLUMN = "__file__"  # the shard a row of JSON Lines / CSV shards was read from (for bad-row messages)
_REMOTE = re.compile(r"^(?!file://)[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB = re.compile(r"[*?\[]")


def _local(text: str) -> str:
    return text[len("file://"):] if text.startswith("file://") else text


def shard_files(source) -> list[Path] | None:
    """The shard files a glob, a list of paths, a `file://` URL or a folder of `.parquet` / `.tar` shards names,
    sorted; None when `source` is none of these (a single file or other folder, a Hub name, a remote URL).

    Raises `FileNotFoundError` for a glob that matches nothing and `ValueError` for shards of mixed or unknown
    formats, naming them."""
    if isinstance(source, (list, tuple)):
        texts = [_local(os.fspath(item)) for item in source]
    else:
        text = _local(os.fspath(source))
        path = Path(text).expanduser()
        if path.is_dir():  # a folder of Parquet or WebDataset shards at its top level
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".parquet", ".tar") and p.is_file())
            if not found:
                return None
            texts = [str(p) for p in found]
        elif _GLOB.search(text) and not path.exists():
            texts = [text]
        elif path.is_file() and path.suffix.lower() == ".tar":
            texts = [text]
        else:
            return None
    files: list[Path] = []
    for text in texts:
        if _GLOB.search(text) and not Path(text).exists():
            matched = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matched:
                raise FileNotFoundError(f"No file matches the pattern {text}")
            files += [Path(match) for match in matched]
        else:
            path = Path(text).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"No such shard file: {text}")
            files.append(path)
    kinds = {SHARD_BUILDERS.get(path.suffix.lower()) for path in files}
    if None in kinds:
        unknown = [str(path) for path in files if path.suffix.lower() not in SHARD_BUILDERS][:3]
        raise ValueError(f"Cannot read shard(s) {unknown}: expected one of {sorted(SHARD_BUILDERS)}.")
    if len(kinds) > 1:
        raise ValueError(f"Shards of one source must share a format; got {sorted(kinds)} in "
                         f"{[str(p) for p in files[:5]]}.")
    return files


def shards_folder(files: list[Path]) -> Path:
    """The folder relative image paths of shards start from: the shards' own folder (all must share one, else pass
    `image_root`)."""
    folders = {path.resolve().parent for path in files}
    if len(folders) > 1:
        raise ValueError(f"The shards lie in several folders ({sorted(map(str, folders))[:3]}...): pass image_root=... "
                         "to say where relative image paths start.")
    return folders.pop()


def _text_shard_rows(files: list[str], string_columns: list[str], field: str | None):
    """Rows of JSON Lines / JSON / CSV / TSV shards, one shard read at a time (a generator for `from_generator`,
    which splits `files` between processes and workers)."""
    for file in files:
        rows = read_data_file(Path(file), set(string_columns), field=field)
        for row in rows:
            yield {**row, FILE_COLUMN: file}


def read_shards(files: list[Path], string_columns: set[str], load_kwargs: dict, streaming: bool):
    """A `Dataset` (or `IterableDataset` when streaming) of the rows of `files` (see `shard_files`)."""
    builder = SHARD_BUILDERS[files[0].suffix.lower()]
    if builder != "text":
        return datasets.load_dataset(builder, data_files=[str(path) for path in files], split="train",
                                     streaming=streaming, **load_kwargs)
    if not streaming:
        parts = [read_data_file(path, string_columns, field=load_kwargs.get("field")) for path in files]
        parts = [part.add_column(FILE_COLUMN, [str(path)] * len(part)) for part, path in zip(parts, files)]
        return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return IterableDataset.from_generator(_text_shard_rows, gen_kwargs={
        "files": [str(path) for path in files], "string_columns": tuple(sorted(string_columns)),
        "field": load_kwargs.get("field")})


def as_stream(loaded, split: str | None):
    """An `IterableDataset` for what loading read: a stream as it is, a `Dataset` through `to_iterable_dataset`
    (one shard per 10k rows, so processes and workers can split it), one split of a dict."""
    if isinstance(loaded, (DatasetDict, IterableDatasetDict)):
        name = (split or "train").split("[", 1)[0]
        if name not in loaded:
            raise ValueError(f"The source has splits {sorted(loaded)}, not {name!r}: pass split=... to stream one.")
        loaded = loaded[name]
    if isinstance(loaded, Dataset):
        loaded = loaded.to_iterable_dataset(num_shards=max(1, min(len(loaded) // 10_000, 1024)))
    return loaded


def is_remote(text: str) -> bool:
    return bool(_REMOTE.match(text))


__all__ = ["FILE_COLUMN", "SHARD_BUILDERS", "as_stream", "is_remote", "read_shards", "shard_files", "shards_folder"]
