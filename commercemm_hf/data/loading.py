"""Load a user's own data as image-text rows or Omni-Retrieval rows (DESIGN.md section 3).

`source` may be:

* a `datasets.Dataset` / `DatasetDict` object, or a folder written by `save_to_disk` (either kind);
* a JSON Lines / JSON / CSV / TSV / Parquet file whose image columns hold paths, relative to the file's folder
  (absolute paths work too). JSON Lines / JSON / CSV / TSV are read by `reading.read_data_file`, without type
  inference: ids and texts come back exactly as written (`00123` stays `00123`, `NA` is a title, JSON integers of
  any size keep their digits); a line that cannot be read is a bad row with its line number; an empty file has 0
  rows;
* a folder of split files (`train.jsonl`, `validation.csv`, `test.tsv`, ...) or an image folder with
  `metadata.jsonl` / `metadata.csv` (at the top, or in `train/`, `validation/`, `test/`; each row's image in
  `file_name`, further image columns as `<name>_file_name`, as `datasets`' imagefolder has them): read like the
  files above (`reading.data_folder_layout`);
* any other folder: handed to `datasets.load_dataset(folder)` (e.g. an image folder labelled by subfolder names);
* otherwise a Hub dataset name, passed to `datasets.load_dataset(name, **load_kwargs)`.

Columns are renamed to the canonical names (`image`, `text`, `label`, `product_id`; for Omni rows
`source_type`, `source_text`, `source_image`, `product_id`, `image`, `text`); other columns are kept as they are.
Every row is checked once: each image it needs is opened with PIL (`verify()` and a full `load()`), texts it needs
must not be empty or whitespace, a `product_id` must be present. A bad row is either skipped, with a
`BadRowWarning` naming its split, index and reason and an entry in the returned `LoadReport`
(`on_bad_rows="skip"`), or raises a `ValueError` naming it (`on_bad_rows="raise"`). The report's counts always add
up: rows read = rows kept + rows skipped, per split. A split whose rows are all bad is an error (a wrong column or
image folder, not data to train on). Image columns come back as lazily decoded `Image()` features.

Two design choices:

* Where image paths may point. A relative path starts from the data file's folder (or `image_root`), never from
  the working directory. Paths may leave that folder (`../`, absolute paths, `~`, symlinks): catalogs often keep
  images on shared storage, and a data file is input chosen by whoever runs the loading, trusted like a script.
  Do not load data files from untrusted sources as they are; pass them through your own path checks first.
* URLs. Image values such as `https://...` are not fetched (a bad row saying so): loading and the processor read
  local files only, so training data is reproducible and works offline. The pipelines, which serve a few inputs
  at inference time, accept URLs as transformers' own pipelines do (`transformers.image_utils.load_image`).

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> folder = Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (8, 8), "red").save(folder / "red.png")
    >>> rows = [{"file": "red.png", "title": "Red mug"}, {"file": "gone.png", "title": "Lost mug"}]
    >>> _ = (folder / "rows.jsonl").write_text("\\n".join(json.dumps(row) for row in rows))
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     dataset, report = load_image_text_dataset(folder / "rows.jsonl", image_column="file", text_column="title")
    >>> len(dataset), report.num_skipped, dataset[0]["image"].size
    (1, 1, (8, 8))
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict, Features, Image, IterableDataset, IterableDatasetDict, Value
from datasets.fingerprint import Hasher
from PIL import Image as PILImage

from .reading import (
    LINE_COLUMN, PROBLEM_COLUMN, TEXT_FORMATS, data_folder_layout, image_folder_rows, read_data_file, string_value,
)
from .schema import DIRECTION_OF, OMNI_FEATURES, SOURCE_TYPES, source_type_of, undecoded
from .shards import FILE_COLUMN, as_stream, read_shards, shard_files, shards_folder


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


class BadRowWarning(UserWarning):
    """A row of a user's dataset was skipped (see `LoadReport`)."""


@dataclass(frozen=True)
class SkippedRow:
    """A row left out while loading: its split, its 0-based index in that split as read, why, and the 1-based line
    of the data file it starts on (None for sources without lines)."""

    split: str
    index: int
    reason: str
    line: int | None = None
    file: str | None = None  # the shard the row is in, for sources of several files

    def where(self) -> str:
        line = f", line {self.line}{f' of {self.file}' if self.file else ''}" if self.line else ""
        return f"row {self.index} (0-based{line}) of split {self.split!r}"


@dataclass
class LoadReport:
    """What loading kept and what it skipped, per split.

    `rows_read[split] == rows_kept[split] + (rows skipped in split)` always holds; `cleared` counts values that
    were dropped from kept Omni rows because their `source_type` does not carry them (a query's image, a view's
    text).

    Example:
        >>> report = LoadReport("rows.jsonl", "image-text", {"train": 3}, {"train": 2},
        ...                     [SkippedRow("train", 1, "text: empty text")])
        >>> report.num_skipped, report.reasons()
        (1, Counter({'text: empty text': 1}))
    """

    source: str
    kind: str
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_kept: dict[str, int] = field(default_factory=dict)
    skipped: list[SkippedRow] = field(default_factory=list)
    cleared: Counter = field(default_factory=Counter)

    @property
    def num_read(self) -> int:
        return sum(self.rows_read.values())

    @property
    def num_kept(self) -> int:
        return sum(self.rows_kept.values())

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def reasons(self) -> Counter:
        """How many rows were skipped for each kind of problem (the reason up to its first detail)."""
        return Counter("; ".join(part.split(" (", 1)[0] for part in row.reason.split("; ")) for row in self.skipped)

    def __str__(self) -> str:
        lines = [f"Loaded {self.kind} rows from {self.source}: kept {self.num_kept} of {self.num_read}, "
                 f"skipped {self.num_skipped}."]
        lines += [f"  {count} x {reason}" for reason, count in self.reasons().most_common()]
        lines += [f"  cleared {count} x {what}" for what, count in self.cleared.most_common()]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Reading the source
# ----------------------------------------------------------------------------------------------------------------


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


def _read_source(source, split: str | None, load_kwargs: dict, string_columns: set[str],
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
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"Cannot read {path}: expected one of {sorted(_FILE_BUILDERS)} (or a folder).")
        if builder == "parquet":  # typed columns: nothing to infer
            loaded = datasets.load_dataset(builder, data_files=str(path), split=split or "train", **load_kwargs)
        else:
            loaded = _read_text_file(path, split, string_columns, load_kwargs)
        return loaded, path.resolve().parent, str(path)
    if isinstance(source, os.PathLike) or text.startswith((".", "/", "~")) or path.suffix.lower() in _FILE_BUILDERS:
        raise FileNotFoundError(f"No such file or folder: {text}")
    if streaming:
        load_kwargs = {**load_kwargs, "streaming": True}
    return datasets.load_dataset(text, split=split, **load_kwargs), Path.cwd(), text


# ----------------------------------------------------------------------------------------------------------------
# Checking values
# ----------------------------------------------------------------------------------------------------------------


def _open_check(opener, full: bool = True) -> str | None:
    """None when the image opens, verifies and fully decodes (`full`), or when its header opens with a size and a
    mode (not `full`: no decode, ~0.1 ms a file); else the error."""
    try:
        if not full:
            with PILImage.open(opener()) as image:
                if image.width < 1 or image.height < 1:
                    return "empty image"
                return None if image.mode else "image without a mode"
        with PILImage.open(opener()) as image:
            image.verify()
        with PILImage.open(opener()) as image:
            image.load()
            if image.width < 1 or image.height < 1:
                return "empty image"
    except Exception as error:  # PIL raises many kinds of errors for broken files
        return f"{type(error).__name__}: {error}"
    return None


class _ImageChecker:
    """Resolves an image value (path string, {"bytes", "path"} dict or None) and checks it once per path."""

    def __init__(self, base_dir: Path, embed: bool, full: bool = True, cache: bool = True):
        self.base_dir, self.embed, self.full = base_dir, embed, full
        # a stream reads each row once: no per-path cache growing with the catalog
        self.cache: dict[str, tuple[dict | None, str | None]] | None = {} if cache else None

    def _resolve(self, path: str) -> Path:
        # Relative paths start from the data's own folder only, never from the working directory: a file that is
        # missing there must not be replaced by a same-named file wherever the program happens to run.
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    def __call__(self, value) -> tuple[dict | None, str | None]:
        """(value for an `Image()` column, problem or None)."""
        if isinstance(value, PILImage.Image):  # a decoded image, e.g. from a user's map over a stream
            if value.width < 1 or value.height < 1:
                return None, "unreadable image (empty image)"
            return Image().encode_example(value), None
        if isinstance(value, dict) and value.get("bytes"):
            data = value["bytes"]
            problem = _open_check(lambda: io.BytesIO(data), self.full)
            return ({"bytes": data, "path": value.get("path")}, None) if problem is None else \
                (None, f"unreadable image ({problem})")
        path = value.get("path") if isinstance(value, dict) else value
        if path is None or (isinstance(path, str) and not path.strip()):
            return None, "missing image"
        if not isinstance(path, str):
            return None, f"not an image path ({path!r})"
        if _URL.match(path.strip()):
            return None, (f"image URL not fetched ({path.strip()[:200]}): loading reads local files only; download "
                          "the images and give their paths")
        if self.cache is None:
            return self._check_file(self._resolve(path.strip()))
        if path not in self.cache:
            self.cache[path] = self._check_file(self._resolve(path.strip()))
        return self.cache[path]

    def _check_file(self, path: Path) -> tuple[dict | None, str | None]:
        if not path.is_file():  # also refuses a named pipe or device, which would block or never end
            return None, f"image {'is not a regular file' if path.exists() else 'file not found'} ({path})"
        problem = _open_check(lambda: str(path), self.full)
        if problem is not None:
            return None, f"unreadable image file ({path}: {problem})"
        return {"bytes": path.read_bytes() if self.embed else None, "path": str(path)}, None


def _clean_text(value) -> tuple[str | None, str | None]:
    """(the text, None when missing or only whitespace; problem): ids and texts are strings (integers give their
    exact digits), never a float's, list's or boolean's repr."""
    text, problem = string_value(value)
    return (text if text is not None and text.strip() else None), problem


def _joined_text(values: Sequence) -> tuple[str | None, str | None]:
    """The text of one column, or the non-empty parts of several joined with '. ' (e.g. title + description), and
    the first problem."""
    cleaned = [_clean_text(value) for value in values]
    parts = [part.strip() for part, _ in cleaned if part is not None]
    problem = next((problem for _, problem in cleaned if problem), None)
    return ". ".join(part.rstrip(".") if i < len(parts) - 1 else part for i, part in enumerate(parts)) or None, problem


def _columns(spec: str | Sequence[str]) -> list[str]:
    return [spec] if isinstance(spec, str) else list(spec)


# ----------------------------------------------------------------------------------------------------------------
# The shared loading loop
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """How to turn source columns into canonical ones for one row kind."""

    kind: str
    inputs: dict[str, list[str]]  # canonical name -> source column(s) ([] when absent)
    features: dict  # canonical name -> feature of the output column
    check_row: object  # (row, images: _ImageChecker) -> (canonical values, problems, cleared)


def _require_columns(dataset: Dataset, plan: _Plan, optional: set[str]) -> None:
    available = set(dataset.column_names)
    for canonical, columns in plan.inputs.items():
        missing = [column for column in columns if column not in available]
        if missing and canonical not in optional:
            raise ValueError(f"{plan.kind} rows need column(s) {missing} for {canonical!r}; the data has columns "
                             f"{dataset.column_names}. Pass {canonical}_column=... to name the right one.")
    used = {column for columns in plan.inputs.values() for column in columns}
    clashes = [name for name in plan.features if name in available and name not in used]
    if clashes:
        raise ValueError(f"The data already has column(s) {clashes} that are not the ones chosen for them; rename or "
                         f"remove them first (e.g. dataset.remove_columns({clashes})).")


def _row_check(plan: _Plan, images: _ImageChecker):
    """The function `map` applies to each source row: canonical values plus `__problems__` / `__cleared__`."""

    def check(row):
        values, problems, cleared = plan.check_row(
            {canonical: [row.get(column) for column in columns] if columns else [None]
             for canonical, columns in plan.inputs.items()}, images)
        if row.get(PROBLEM_COLUMN):  # the line could not be read, or an id/text is not a string: that is the reason
            problems = [row[PROBLEM_COLUMN]]
        return {**values, "__problems__": "; ".join(problems), "__cleared__": ",".join(cleared)}

    return check


def _checked_features(dataset, plan: _Plan) -> tuple[list[str], list[str], Features]:
    """(source columns used, bookkeeping columns from reading.py, features of the checked rows)."""
    names = list(dataset.column_names or [])
    used = sorted({column for columns in plan.inputs.values() for column in columns if column in names})
    read_problems = [PROBLEM_COLUMN] if PROBLEM_COLUMN in names else []  # from reading.py
    passthrough = [column for column in names if column not in used + read_problems]
    source_features = dataset.features or {}
    features = Features({**plan.features, **{column: source_features[column] for column in passthrough
                                             if column in source_features},
                         "__problems__": Value("string"), "__cleared__": Value("string")})
    if plan.inputs.get("label") and plan.inputs["label"][0] in source_features:
        features["label"] = source_features[plan.inputs["label"][0]]  # e.g. ClassLabel names, or strings
    return used, read_problems, features


def _load_split(dataset: Dataset, split: str, plan: _Plan, base_dir: Path, on_bad_rows: str, embed: bool,
                num_proc: int | None, description: str, report: LoadReport, max_warnings: int,
                image_check: str = "full") -> Dataset:
    used = sorted({column for columns in plan.inputs.values() for column in columns
                   if column in dataset.column_names})
    dataset = undecoded(dataset, used)
    used, read_problems, features = _checked_features(dataset, plan)
    check = _row_check(plan, _ImageChecker(base_dir, embed, full=image_check == "full"))
    fingerprint = Hasher.hash((dataset._fingerprint, plan.kind, plan.inputs, str(base_dir), embed, image_check, "check-v1"))
    if len(dataset) == 0:  # datasets' map adds no columns to an empty dataset
        checked = Dataset.from_dict({name: [] for name in features}, features=features)
    else:
        checked = dataset.map(check, remove_columns=used + read_problems, features=features, num_proc=num_proc,
                              load_from_cache_file=False, new_fingerprint=fingerprint,
                              desc=f"Checking {plan.kind} rows ({split})")
    problems = list(checked["__problems__"])
    lines = list(checked[LINE_COLUMN]) if LINE_COLUMN in checked.column_names else [None] * len(checked)
    files = list(checked[FILE_COLUMN]) if FILE_COLUMN in checked.column_names else [None] * len(checked)
    bad = [SkippedRow(split, index, reason, lines[index], files[index]) for index, reason in enumerate(problems)
           if reason]
    if bad and on_bad_rows == "raise":
        more = f" ({len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise ValueError(f"Bad {bad[0].where()} in {description}: {bad[0].reason}{more}.")
    if bad and len(bad) == len(checked):
        reasons = Counter(row.reason.split(" (", 1)[0] for row in bad).most_common(3)
        raise ValueError(f"No usable rows in split {split!r} of {description}: all {len(bad)} rows are bad (first: "
                         f"{bad[0].where()}: {bad[0].reason}; most common: {reasons}). Check the column names "
                         "and the image paths (relative paths start from the data file's folder).")
    for row in bad:
        report.skipped.append(row)
        if len(report.skipped) <= max_warnings:
            warnings.warn(f"Skipping {row.where()} in {description}: {row.reason}", BadRowWarning, stacklevel=4)
    cleared_values = list(checked["__cleared__"])
    good = [index for index, reason in enumerate(problems) if not reason]
    for index in good:
        for what in filter(None, cleared_values[index].split(",")):
            report.cleared[what] += 1
    report.rows_read[split] = len(checked)
    report.rows_kept[split] = len(good)
    kept = checked.select(good) if bad else checked
    return kept.remove_columns([name for name in ("__problems__", "__cleared__", LINE_COLUMN, FILE_COLUMN)
                                if name in kept.column_names])


def _stream_split(stream: IterableDataset, split: str, plan: _Plan, optional: set[str], base_dir: Path,
                  on_bad_rows: str, embed: bool, image_check: str, description: str, report: LoadReport,
                  max_warnings: int) -> IterableDataset:
    """The rows of a stream, checked as they are read: bad rows are dropped (or raise) and counted in `report`
    when the stream is iterated (in the process that iterates it)."""
    if stream.features is None:
        stream = stream._resolve_features()  # reads the first rows only
    present = {canonical: [c for c in columns if c in stream.column_names] if canonical in optional else columns
               for canonical, columns in plan.inputs.items()}
    plan = _Plan(plan.kind, present, plan.features, plan.check_row)
    _require_columns(stream, plan, optional)
    stream = undecoded(stream, [column for columns in plan.inputs.values() for column in columns])
    used, read_problems, features = _checked_features(stream, plan)
    check = _row_check(plan, _ImageChecker(base_dir, embed, full=image_check == "full", cache=False))
    position = {"index": -1}
    report.rows_read.setdefault(split, 0)
    report.rows_kept.setdefault(split, 0)

    def keep(row) -> bool:
        position["index"] += 1
        report.rows_read[split] += 1
        if not row["__problems__"]:
            report.rows_kept[split] += 1
            for what in filter(None, row["__cleared__"].split(",")):
                report.cleared[what] += 1
            return True
        bad = SkippedRow(split, position["index"], row["__problems__"], row.get(LINE_COLUMN), row.get(FILE_COLUMN))
        if on_bad_rows == "raise":
            raise ValueError(f"Bad {bad.where()} in {description}: {bad.reason}.")
        report.skipped.append(bad)
        if len(report.skipped) <= max_warnings:
            warnings.warn(f"Skipping {bad.where()} in {description}: {bad.reason}", BadRowWarning, stacklevel=2)
        return False

    checked = stream.map(check, remove_columns=used + read_problems, features=features).filter(keep)
    return checked.remove_columns([name for name in ("__problems__", "__cleared__", LINE_COLUMN, FILE_COLUMN)
                                   if name in checked.column_names])


def _load(source, split, plan: _Plan, optional: set[str], on_bad_rows: str, embed: bool, num_proc, max_warnings,
          image_root, load_kwargs, streaming: bool = False,
          image_check: str | None = None) -> tuple[Dataset | DatasetDict | IterableDataset, LoadReport]:
    if on_bad_rows not in ("skip", "raise"):
        raise ValueError(f"on_bad_rows must be 'skip' or 'raise', got {on_bad_rows!r}.")
    image_check = image_check or ("header" if streaming else "full")
    if image_check not in ("header", "full"):
        raise ValueError(f"image_check must be 'header' or 'full', got {image_check!r}.")
    # ids and texts are read as strings (no type inference); images and labels keep their types
    string_columns = {column for canonical, columns in plan.inputs.items() if canonical not in ("image", "label",
                                                                                                 "source_image")
                      for column in columns}
    loaded, base_dir, description = _read_source(source, split, load_kwargs, string_columns, streaming)
    if image_root is not None:
        base_dir = Path(image_root).expanduser().resolve()
    report = LoadReport(description, plan.kind)
    if streaming or isinstance(loaded, IterableDataset):
        stream = _stream_split(as_stream(loaded, split), (split or "train").split("[", 1)[0], plan, optional,
                               base_dir, on_bad_rows, embed, image_check, description, report, max_warnings)
        return stream, report
    if not isinstance(loaded, (Dataset, DatasetDict)):
        raise TypeError(f"Expected a Dataset or DatasetDict from {description}, got {type(loaded).__name__}.")
    splits = loaded if isinstance(loaded, DatasetDict) else {split or "train": loaded}
    out = {}
    for name, dataset in splits.items():
        if len(dataset) == 0:  # an empty file: 0 rows, whatever columns it would have had
            needed = [column for canonical, columns in plan.inputs.items() if canonical not in optional
                      for column in columns if column not in dataset.column_names]
            for column in dict.fromkeys(needed):
                dataset = dataset.add_column(column, [])
        present = {canonical: [c for c in columns if c in dataset.column_names] if canonical in optional else columns
                   for canonical, columns in plan.inputs.items()}
        split_plan = _Plan(plan.kind, present, plan.features, plan.check_row)
        _require_columns(dataset, split_plan, optional)
        out[name] = _load_split(dataset, name, split_plan, base_dir, on_bad_rows, embed, num_proc, description,
                                report, max_warnings, image_check)
    hidden = report.num_skipped - max_warnings
    if hidden > 0:
        warnings.warn(f"... and {hidden} more bad rows skipped in {description} (see the returned LoadReport).",
                      BadRowWarning, stacklevel=3)
    return (DatasetDict(out) if isinstance(loaded, DatasetDict) else out[split or "train"]), report


# ----------------------------------------------------------------------------------------------------------------
# Image-text rows
# ----------------------------------------------------------------------------------------------------------------


def load_image_text_dataset(source, split: str | None = None, image_column: str | None = "image",
                            text_column: str | Sequence[str] | None = "text", label_column: str | None = None,
                            product_id_column: str | None = None, on_bad_rows: str = "skip",
                            require_text: bool = True, embed_images: bool = False, image_root=None,
                            num_proc: int | None = None, max_warnings: int = 20, streaming: bool = False,
                            image_check: str | None = None, **load_kwargs) -> tuple[Dataset | DatasetDict, LoadReport]:
    """Load image-text rows (`image`, `text`, optional `label` and `product_id`) and a `LoadReport`.

    Args:
        source: a Dataset / DatasetDict, a `save_to_disk` folder, a .jsonl/.json/.csv/.tsv/.parquet file (image
            paths relative to the file), an image folder or a Hub dataset name (see the module docstring).
        split: one split to load (also datasets' slicing syntax for files and Hub datasets, e.g. "train[:100]").
            Without it a file gives a `Dataset`, anything with splits a `DatasetDict`.
        image_column, text_column, label_column, product_id_column: the source's column names; `text_column` may
            list several columns (e.g. `["title", "description"]`) joined with ". ". `image_column=None` or
            `text_column=None` loads text-only or image-only rows (without that column).
        on_bad_rows: "skip" (warn, count in the report) or "raise" (a ValueError naming the first bad row).
        require_text: whether an empty text makes a row bad (else it becomes "").
        embed_images: store image bytes in the dataset instead of file paths (self-contained, larger).
        image_root: the folder relative image paths start from (default: the data file's folder, the image
            folder, the saved dataset's folder, or the working directory for in-memory and Hub datasets).
        num_proc: processes for checking rows.
        streaming: return a `datasets.IterableDataset` read shard by shard, its rows checked as they are read (bad
            rows dropped and counted in the report as the stream is iterated); an `IterableDataset` passed in is
            always streamed.
        image_check: "full" (open, verify and decode every image once; the default without streaming) or "header"
            (open the header: size and mode, no decode; the default when streaming).
        max_warnings: how many bad rows get a warning each (then one warning for the rest). `load_kwargs` go to `datasets.load_dataset` / `load_from_disk`.

    Returns:
        `(dataset, report)`.

    Example:
        >>> from datasets import Dataset, Image as ImageFeature
        >>> from PIL import Image
        >>> import io, warnings
        >>> png = io.BytesIO(); Image.new("RGB", (4, 4)).save(png, format="PNG")
        >>> data = Dataset.from_dict({"picture": [{"bytes": png.getvalue(), "path": None}] * 2,
        ...                           "caption": ["black square", "  "]}).cast_column("picture", ImageFeature())
        >>> with warnings.catch_warnings(record=True):
        ...     rows, report = load_image_text_dataset(data, image_column="picture", text_column="caption")
        >>> rows.column_names, report.rows_kept, report.skipped[0].reason
        (['image', 'text'], {'train': 1}, 'text: empty text')
    """
    if image_column is None and text_column is None:
        raise ValueError("Image-text rows need an image column, a text column or both.")
    inputs, features = {}, {}
    if image_column is not None:
        inputs["image"], features["image"] = [image_column], Image()
    if text_column is not None:
        inputs["text"], features["text"] = _columns(text_column), Value("string")
    if label_column is not None:
        inputs["label"], features["label"] = [label_column], Value("int64")  # replaced by the column's feature
    if product_id_column is not None:
        inputs["product_id"], features["product_id"] = [product_id_column], Value("string")

    def check_row(values: dict, images: _ImageChecker):
        problems, out = [], {}
        if "image" in values:
            out["image"], problem = images(values["image"][0])
            if problem:
                problems.append(f"image: {problem}")
        if "text" in values:
            text, problem = _joined_text(values["text"])
            if problem:
                problems.append(f"text: {problem}")
            elif text is None and require_text:
                problems.append("text: empty text")
            out["text"] = text or ""
        if "label" in values:
            out["label"] = values["label"][0]
            if out["label"] is None:
                problems.append("label: missing label")
        if "product_id" in values:
            out["product_id"], problem = _clean_text(values["product_id"][0])
            if problem or out["product_id"] is None:
                problems.append(f"product_id: {problem or 'missing product_id'}")
        return out, problems, []

    plan = _Plan("image-text", inputs, features, check_row)
    return _load(source, split, plan, set(), on_bad_rows, embed_images, num_proc, max_warnings, image_root,
                 load_kwargs, streaming, image_check)


# ----------------------------------------------------------------------------------------------------------------
# Omni rows
# ----------------------------------------------------------------------------------------------------------------


def load_omni_dataset(source, split: str | None = None, source_type_column: str | None = "source_type",
                      source_text_column: str | None = "source_text", source_image_column: str | None = "source_image",
                      product_id_column: str = "product_id", image_column: str = "image",
                      text_column: str | Sequence[str] = "text", on_bad_rows: str = "skip",
                      embed_images: bool = False, image_root=None, num_proc: int | None = None,
                      max_warnings: int = 20, streaming: bool = False,
                            image_check: str | None = None, **load_kwargs) -> tuple[Dataset | DatasetDict, LoadReport]:
    """Load Omni-Retrieval rows (`source_type`, `source_text`, `source_image`, `product_id`, `image`, `text`) and a
    `LoadReport`.

    A `query` needs a source text, a `view` a source image and a `post` both (an image and its caption); every row
    needs a `product_id` and the product's image and text. Without a source-type column (or with
    `source_type_column=None`) the type follows from what a row has: text only -> query, image only -> view, both
    -> post. A value the type does not carry (a query's image, a view's text) is cleared and counted in
    `report.cleared`. The source-text and source-image columns may be absent (e.g. views only).
    Other arguments as in `load_image_text_dataset`.

    Example:
        >>> from datasets import Dataset
        >>> from PIL import Image
        >>> import io, warnings
        >>> png = io.BytesIO(); Image.new("RGB", (4, 4)).save(png, format="PNG")
        >>> picture = {"bytes": png.getvalue(), "path": None}
        >>> data = Dataset.from_dict({"query": ["black tile", None], "photo": [None, picture],
        ...                           "sku": ["A1", "A1"], "image": [picture] * 2, "text": ["Black tile"] * 2})
        >>> rows, report = load_omni_dataset(data, source_type_column=None, source_text_column="query",
        ...                                  source_image_column="photo", product_id_column="sku")
        >>> list(rows["source_type"]), report.num_skipped
        (['query', 'view'], 0)
    """
    defaults = {"source_type": "source_type", "source_text": "source_text", "source_image": "source_image"}
    chosen = {"source_type": source_type_column, "source_text": source_text_column,
              "source_image": source_image_column}
    inputs = {canonical: [column] if column else [] for canonical, column in chosen.items()}
    inputs.update({"product_id": [product_id_column], "image": [image_column], "text": _columns(text_column)})
    # The default names may be absent from the data; names the caller chose must exist.
    optional = {canonical for canonical, column in chosen.items() if column in (None, defaults[canonical])}
    features = dict(OMNI_FEATURES.copy())

    def check_row(values: dict, images: _ImageChecker):
        problems, cleared = [], []
        source_text, problem = _clean_text(values["source_text"][0])
        if problem:
            problems.append(f"source_text: {problem}")
        raw_image = values["source_image"][0]
        has_image = raw_image is not None and not (isinstance(raw_image, dict) and not any(raw_image.values()))
        source_type, problem = _clean_text(values["source_type"][0])
        if problem:
            problems.append(f"source_type: {problem}")
        if source_type is None:
            source_type = source_type_of(has_text=source_text is not None, has_image=has_image)
            if source_type is None:
                problems.append("source: neither a source text nor a source image")
        else:
            source_type = source_type.strip().lower()
            if source_type not in SOURCE_TYPES:
                problems.append(f"source_type: unknown source_type {source_type!r} (expected one of {SOURCE_TYPES})")
        source_image, direction = None, DIRECTION_OF.get(source_type)
        if direction and direction.has_image:
            source_image, problem = images(raw_image)
            if problem:
                problems.append(f"source_image: {problem}")
        elif direction and has_image:
            cleared.append(f"source_image of {source_type} rows")
        if direction and direction.has_text and source_text is None:
            problems.append(f"source_text: empty {direction.text_name}")
        if direction and not direction.has_text and source_text is not None:
            cleared.append(f"source_text of {source_type} rows")
            source_text = None
        product_id, problem = _clean_text(values["product_id"][0])
        if problem or product_id is None:
            problems.append(f"product_id: {problem or 'missing product_id'}")
        image, problem = images(values["image"][0])
        if problem:
            problems.append(f"image: {problem}")
        text, problem = _joined_text(values["text"])
        if problem or text is None:
            problems.append(f"text: {problem or 'empty product text'}")
        out = {"source_type": source_type, "source_text": source_text, "source_image": source_image,
               "product_id": product_id.strip() if product_id else None, "image": image, "text": text}
        return out, problems, cleared

    plan = _Plan("omni", inputs, features, check_row)
    return _load(source, split, plan, optional, on_bad_rows, embed_images, num_proc, max_warnings, image_root,
                 load_kwargs, streaming, image_check)


__all__ = ["BadRowWarning", "LoadReport", "SkippedRow", "load_image_text_dataset", "load_omni_dataset"]
