"""Sources as catalogs store them: glob patterns and lists of shards, WebDataset tars, `file://` URLs, and streams.

Used by `loading`: `shard_files(source)` turns a glob (`data/*.parquet`), a list of paths, a `file://` URL or a
folder of shards into the list of files, `read_stream(...)` turns any source into a `datasets.IterableDataset` read
shard by shard (memory O(one shard), never O(rows)).

* Parquet shards: `datasets`' parquet builder (typed columns, streamed by record batch).
* WebDataset shards (`.tar`, one file, a folder or a glob): `datasets`' webdataset builder; a sample's files become
  columns named by their extension (`jpg`, `txt`, `json`, ...), so pass e.g. `image_column="jpg"`, `text_column="txt"`.
* JSON Lines / JSON / CSV / TSV shards: `reading.read_data_file_chunks`, 10k rows at a time (ids and texts as
  written; a stream's column types are those of its first 10k rows).
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
import warnings
from pathlib import Path

import datasets
import pyarrow as pa
from datasets import Dataset, DatasetDict, Features, IterableDataset, IterableDatasetDict, Value

from .reading import PROBLEM_COLUMN, TEXT_FORMATS, describe_value, read_data_file, read_data_file_chunks


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


#: rows of a JSON Lines / CSV shard read at a time when streaming (memory O(chunk), not O(file))
CHUNK_ROWS = 10_000


def _stream_features(table: pa.Table) -> Features:
    """The stream's features, from the first chunk of the first shard (as `datasets`' JSON builder infers them from
    its first block): a column without a value there is read as strings."""
    features = Features.from_arrow_schema(table.schema)
    for name, feature in features.items():
        if isinstance(feature, Value) and feature.dtype == "null":
            features[name] = Value("string")
    features[FILE_COLUMN] = Value("string")
    return features


def _fitted(table: pa.Table, features: Features, path: str, chunk_start: int) -> pa.Table:
    """`table` (a later chunk) in the stream's column types: a value that does not fit its column's type as the
    first chunk fixed it becomes a bad row naming the column and the value, not a crash mid-stream; a column the
    first chunk did not have is dropped with a warning."""
    problems = table.column(PROBLEM_COLUMN).to_pylist()
    extra = [name for name in table.column_names if name not in features]
    if extra:
        warnings.warn(f"{path}: column(s) {extra} first appear after the first {CHUNK_ROWS} rows of the stream "
                      f"(from row {chunk_start}): a stream keeps the first rows' columns, so they are left out.",
                      stacklevel=2)
    columns = {}
    for name in features:
        if name == FILE_COLUMN:
            continue
        target = features.arrow_schema.field(name).type
        if name not in table.column_names:
            columns[name] = pa.nulls(len(table), target)
            continue
        column = table.column(name)
        try:
            columns[name] = column.cast(target)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            values = []
            for i, value in enumerate(column.to_pylist()):
                try:
                    values.append(pa.array([value]).cast(target)[0].as_py() if value is not None else None)
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
                    values.append(None)
                    problem = (f"{name}: {describe_value(value)} does not fit the column's type {target} (a stream "
                               f"takes the types of its first {CHUNK_ROWS} rows)")
                    problems[i] = "; ".join(filter(None, [problems[i], problem]))
            columns[name] = pa.array(values, target)
    columns[PROBLEM_COLUMN] = pa.array(problems, pa.string())
    return pa.table(columns)


def _text_shard_rows(files: list[str], string_columns: list[str], field: str | None, features: Features):
    """Rows of JSON Lines / JSON / CSV / TSV shards, each read `CHUNK_ROWS` rows at a time (a generator for
    `from_generator`, which splits `files` between processes and workers)."""
    for file in files:
        start = 0
        for table in read_data_file_chunks(Path(file), set(string_columns), field=field, chunk_rows=CHUNK_ROWS):
            for row in _fitted(table, features, file, start).to_pylist():
                row[FILE_COLUMN] = file
                yield row
            start += len(table)


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
    # the features come from the first chunk of the first shard that has rows: reading the stream once more to
    # resolve them would read that shard whole
    first = None
    for path in files:
        first = next(read_data_file_chunks(path, string_columns, field=load_kwargs.get("field"),
                                           chunk_rows=CHUNK_ROWS))
        if len(first):
            break
    return IterableDataset.from_generator(_text_shard_rows, features=_stream_features(first), gen_kwargs={
        "files": [str(path) for path in files], "string_columns": tuple(sorted(string_columns)),
        "field": load_kwargs.get("field"), "features": _stream_features(first)})


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
