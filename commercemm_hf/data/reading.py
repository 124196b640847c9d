"""Reading JSON Lines / JSON / CSV / TSV data files row by row, without type inference (used by `loading`).

Why not `datasets.load_dataset("csv" / "json")`: pandas' CSV type inference turns the id `00123` into `123` and an
integer column with one empty cell into `1001.0`, drops titles such as `NA` or `null` as missing, and strips quotes
from TSV fields; Arrow's JSON reader turns ids above 2**63 into one float and rejects a whole file for one malformed
line without naming it. Here:

* CSV values are the strings as written (an empty cell is ""), TSV fields are read literally (no quoting: a tab
  separates fields, a line ends a row);
* JSON values keep their JSON types (a column Arrow cannot hold as one type, e.g. a big integer, becomes strings
  with a warning), except that the columns named in `string_columns` (ids and texts) are made strings exactly:
  a JSON integer of any size becomes its digits, and any other non-string value (a list, an
  object, a boolean, a float) makes the row bad, naming the column and the value;
* a line that cannot be read (malformed JSON, not a JSON object, a byte that is not UTF-8, a lone surrogate, a CSV
  row with the wrong number of fields) becomes a row with only a problem, so it is skipped and counted with its
  line number like any other bad row; blank lines are no rows; an empty file has 0 rows.

Every returned dataset carries two bookkeeping columns, `LINE_COLUMN` (the 1-based line a row starts on, None for
the items of a JSON array) and `PROBLEM_COLUMN` ("" for a row that was read fine).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "rows.csv"
    >>> _ = path.write_text("sku,title\\n00123,NA\\n7,Mug,extra\\n")
    >>> rows = read_data_file(path, {"sku", "title"})
    >>> list(rows["sku"]), list(rows["title"]), rows[PROBLEM_COLUMN][1]
    (['00123', None], ['NA', None], 'unreadable line: 3 fields, the header has 2')
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from pathlib import Path

import pyarrow as pa
from datasets import Dataset


LINE_COLUMN = "__line__"
PROBLEM_COLUMN = "__read_problems__"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(value) -> bool:
    """Whether a parsed value holds a lone surrogate (an undecodable byte, or a JSON "\\ud800" escape)."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(key) or _has_surrogate(item) for key, item in value.items())
    if isinstance(value, list):
        return any(map(_has_surrogate, value))
    return False


def describe_value(value) -> str:
    """A short description of a value for an error message: its type and (cut) repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def string_value(value) -> tuple[str | None, str | None]:
    """(the value as an id/text string or None, problem or None): strings as they are, integers as their exact
    digits; floats, booleans, lists and objects are a problem (`1001.0` is not the id `1001`)."""
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    return None, f"not a string ({describe_value(value)})"


# ----------------------------------------------------------------------------------------------------------------
# One record per row: (line or None, dict of values or None, problem or None)
# ----------------------------------------------------------------------------------------------------------------


def _json_records(lines):
    """Records of JSON Lines given as (1-based number, line) pairs (`_file_lines`); blank lines are skipped."""
    for number, raw in lines:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            yield number, None, f"not valid UTF-8 ({error.reason} at byte {error.start} of the line)"
            continue
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            yield number, None, f"invalid JSON ({error.msg} at column {error.colno})"
            continue
        yield (number, *_json_object(value))


def _json_object(value) -> tuple[dict | None, str | None]:
    if not isinstance(value, dict):
        return None, f"not a JSON object ({describe_value(value)})"
    if _has_surrogate(value):
        return None, "holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not valid text"
    return value, None


def _file_lines(handle):
    """(1-based number, line without its "\\n") of a binary file, read line by line: a BOM at the start is dropped,
    as the whole-file read drops it, and "\\r" stays (JSON ignores it)."""
    for number, line in enumerate(handle, start=1):
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")
        yield number, line[:-1] if line.endswith(b"\n") else line


def _json_document_records(path: Path, data: bytes, field: str | None):
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not valid UTF-8 ({error.reason} at byte {error.start}).") from None
    except json.JSONDecodeError as error:
        if error.msg == "Extra data" and field is None:  # JSON Lines in a .json file
            yield from _json_records(_file_lines(io.BytesIO(data)))
            return
        raise ValueError(f"{path}: invalid JSON at line {error.lineno}, column {error.colno} ({error.msg}).") from None
    if field is not None:
        if not isinstance(document, dict) or field not in document:
            raise ValueError(f"{path} has no top-level key {field!r} (field=...).")
        document = document[field]
    if isinstance(document, dict) and document and all(isinstance(column, list) for column in document.values()):
        lengths = {len(column) for column in document.values()}
        if len(lengths) != 1:
            raise ValueError(f"{path}: the columns of this column-wise JSON object differ in length "
                             f"({ {name: len(column) for name, column in document.items()} }).")
        document = [dict(zip(document, values)) for values in zip(*document.values())]
    if isinstance(document, dict):
        document = [document]  # a file holding one row object
    if not isinstance(document, list):
        raise ValueError(f"{path} holds a JSON {type(document).__name__}; expected an array of row objects, an "
                         "object (of columns, or one row), JSON Lines, or field=... naming the key that holds "
                         "the rows.")
    for value in document:
        yield (None, *_json_object(value))


def _csv_records(path: Path, lines, delimiter: str):
    """Records of CSV / TSV text given as lines (an open text file, read as it goes); the first record is
    `(None, header, None)` (the header is None for an empty file)."""
    literal = delimiter == "\t"
    reader = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_NONE if literal else csv.QUOTE_MINIMAL,
                        strict=not literal)
    header, line = None, 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            if header is None:
                raise ValueError(f"{path}: cannot read the header line ({error}).") from None
            yield line, None, f"unreadable CSV ({error})"
            line = reader.line_num + 1
            continue
        start, line = line, reader.line_num + 1
        if not fields or (len(fields) == 1 and not fields[0].strip() and header is not None and len(header) > 1):
            continue  # a blank line is no row
        if header is None:
            if any(map(_has_surrogate, fields)):
                raise ValueError(f"{path}: the header line is not valid UTF-8.")
            duplicates = sorted({name for name in fields if fields.count(name) > 1})
            if duplicates or not all(name.strip() for name in fields):
                raise ValueError(f"{path}: the header line needs distinct, non-empty column names, got {fields}.")
            header = fields
            yield None, header, None
            continue
        if any(map(_has_surrogate, fields)):
            yield start, None, "not valid UTF-8"
        elif len(fields) != len(header):
            yield start, None, f"{len(fields)} fields, the header has {len(header)}"
        else:
            yield start, dict(zip(header, fields)), None
    if header is None:
        yield None, None, None


def _text_lines(handle):
    """The lines of a text file opened with `newline=""`, a BOM at the start dropped."""
    for number, line in enumerate(handle):
        yield line.removeprefix("\ufeff") if number == 0 else line


def _file_records(path: Path, handle, field: str | None):
    """(CSV header or None, records) of an open binary file: JSON Lines and CSV / TSV are read line by line as the
    records are taken; a JSON document is parsed whole (it is one value)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        text = io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape", newline="")
        records = _csv_records(path, _text_lines(text), "\t" if suffix == ".tsv" else ",")
        _, header, _ = next(records)
        return header, records
    if suffix == ".jsonl":
        return None, _json_records(_file_lines(handle))
    return None, _json_document_records(path, handle.read().removeprefix(b"\xef\xbb\xbf"), field)


# ----------------------------------------------------------------------------------------------------------------
# Records -> Dataset
# ----------------------------------------------------------------------------------------------------------------


def _column_array(path: Path, name: str, values: list, lines: list) -> pa.Array:
    """The column with Arrow's inferred type; a column Arrow cannot hold as one type (strings mixed with numbers,
    integers beyond 64 bits) is kept as strings, exactly (integers as their digits, other JSON values as JSON
    text), with a warning naming the column and the first row that differs."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
        kinds = [type(value) for value in values if value is not None]
        first = next((i for i, value in enumerate(values) if value is not None and type(value) is not kinds[0]), None)
        where = (f"; first at row {first}" + (f", line {lines[first]}" if lines[first] else "")) if first else ""
        warnings.warn(f"{path}: column {name!r} cannot be stored as one type ({error}){where}: keeping its values "
                      "as strings (integers as their digits, other values as JSON).", stacklevel=6)
        return pa.array([value if value is None or isinstance(value, str) else
                         str(value) if isinstance(value, int) and not isinstance(value, bool) else
                         json.dumps(value, ensure_ascii=False) for value in values], pa.string())


def _records_table(path: Path, header: list[str] | None, records: list, string_columns: set[str]) -> pa.Table:
    names = list(dict.fromkeys(header or [name for _, values, _ in records if values for name in values]))
    if any(name in (LINE_COLUMN, PROBLEM_COLUMN) for name in names):
        raise ValueError(f"{path}: the column names {LINE_COLUMN!r} and {PROBLEM_COLUMN!r} are reserved.")
    lines = [line for line, _, _ in records]
    # the line itself is not repeated: the loader names each row with its index and line
    problems = [f"unreadable {'line' if line else 'item'}: {problem}" if problem else ""
                for line, _, problem in records]
    columns = {}
    for name in names:
        values = [values.get(name) if values else None for _, values, _ in records]
        if name in string_columns:
            converted = []
            for i, value in enumerate(values):
                text, problem = string_value(value)
                converted.append(text)
                if problem:
                    problems[i] = "; ".join(filter(None, [problems[i], f"{name}: {problem}"]))
            columns[name] = pa.array(converted, pa.string())
        else:
            columns[name] = _column_array(path, name, values, lines)
    columns[LINE_COLUMN] = pa.array(lines, pa.int64())
    columns[PROBLEM_COLUMN] = pa.array(problems, pa.string())
    return pa.table(columns)


def read_data_file(path: Path, string_columns: set[str], field: str | None = None) -> Dataset:
    """Rows of a .jsonl / .json / .csv / .tsv file as a `Dataset` (see the module docstring)."""
    with open(path, "rb") as handle:
        header, records = _file_records(path, handle, field)
        return Dataset(_records_table(path, header, list(records), string_columns))


def read_data_file_chunks(path: Path, string_columns: set[str], field: str | None = None,
                          chunk_rows: int = 10_000):
    """The rows of `read_data_file(path, ...)` as Arrow tables of up to `chunk_rows` rows each, read as they are
    taken: memory holds one chunk, not the file (a JSON document, one value, is parsed whole). The rules are
    `read_data_file`'s, applied to each chunk, so a column's type is inferred per chunk (a stream fixes it from
    the first chunk: `shards.read_shards`). An empty file gives one table of 0 rows.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "rows.jsonl"
        >>> _ = path.write_text('{"sku": 1}\\n{oops\\n{"sku": "07"}\\n')
        >>> [table.to_pydict() for table in read_data_file_chunks(path, {"sku"}, chunk_rows=2)][1]
        {'sku': ['07'], '__line__': [3], '__read_problems__': ['']}
    """
    with open(path, "rb") as handle:
        header, records = _file_records(path, handle, field)
        chunk, produced = [], False
        for record in records:
            chunk.append(record)
            if len(chunk) == chunk_rows:
                yield _records_table(path, header, chunk, string_columns)
                chunk, produced = [], True
        if chunk or not produced:
            yield _records_table(path, header, chunk, string_columns)


# ----------------------------------------------------------------------------------------------------------------
# Folders: split files, or an image folder's metadata files
# ----------------------------------------------------------------------------------------------------------------

TEXT_FORMATS = (".jsonl", ".json", ".csv", ".tsv")
#: split file stems as `datasets` names them ("valid", "val", "dev" -> "validation")
_SPLIT_STEMS = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                "dev": "validation", "test": "test"}


def data_folder_layout(folder: Path) -> tuple[str, dict[str, Path]] | None:
    """How a folder of text data files is laid out, so its files are read as written (not by pandas):
    `("split files", {split: file})` for `train.jsonl` / `validation.csv` / `test.tsv` ... side by side, or
    `("image folder", {split: metadata file})` for an image folder with `metadata.jsonl` / `metadata.csv` at the
    top ("train") or in `train/`, `validation/`, `test/` subfolders. None for any other layout (left to
    `datasets.load_dataset`, e.g. an image folder labelled by subfolder names, or Parquet metadata)."""
    top = [path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in TEXT_FORMATS + (".parquet",)]
    metadata = {path.name for path in top if path.stem == "metadata"}
    if metadata:
        if len(metadata) > 1 or len(top) > 1 or "metadata.parquet" in metadata:
            return None
        return "image folder", {"train": top[0]}
    if top:
        splits = {}
        for path in top:
            split = _SPLIT_STEMS.get(path.stem.lower())
            if split is None or split in splits or path.suffix.lower() == ".parquet":
                return None
            splits[split] = path
        return "split files", splits
    splits = {}
    for sub in sorted(path for path in folder.iterdir() if path.is_dir()):
        split = _SPLIT_STEMS.get(sub.name.lower())
        files = [path for path in sub.iterdir() if path.is_file() and path.stem == "metadata"]
        if split is None or split in splits or len(files) != 1 or files[0].suffix.lower() not in TEXT_FORMATS:
            return None
        splits[split] = files[0]
    return ("image folder", splits) if splits else None


def image_folder_rows(rows: Dataset, metadata_file: Path) -> Dataset:
    """An image folder's metadata rows as `datasets`' imagefolder names them: `file_name` -> `image` and
    `<name>_file_name` -> `<name>`, paths relative to the metadata file's folder made absolute."""
    base = metadata_file.resolve().parent
    renames = {name: "image" if name == "file_name" else name[:-len("_file_name")] for name in rows.column_names
               if name == "file_name" or name.endswith("_file_name")}
    if not renames:
        raise ValueError(f"{metadata_file} has no file_name column naming each row's image.")
    clashes = sorted(target for target in renames.values() if target in rows.column_names)
    if clashes:
        raise ValueError(f"{metadata_file} has both file-name columns and columns {clashes}.")

    def absolute(batch):
        return {name: [str(base / value) if isinstance(value, str) and value.strip() else value
                       for value in batch[name]] for name in renames}

    rows = rows.map(absolute, batched=True, desc="Resolving image paths") if len(rows) else rows
    return rows.rename_columns(renames)


__all__ = ["LINE_COLUMN", "PROBLEM_COLUMN", "data_folder_layout", "describe_value", "image_folder_rows",
           "read_data_file", "read_data_file_chunks", "string_value"]
