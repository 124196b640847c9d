"""Load a user's own data as image-text rows or Omni-Retrieval rows (DESIGN.md section 3).

This module checks rows and renames their columns; `sources.read_source` reads them, `schema` names the columns.
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
image folder, not data to train on). Image columns come back as lazily decoded `Image()` features. A stream
(`streaming=True`) checks each row as it is read, and by default its images only when the collator decodes them,
per batch (`image_check="lazy"`, see `checks`): the check then costs no decode beyond the one training does.

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

import contextlib
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict, Features, Image, IterableDataset, Value
from datasets.fingerprint import Hasher

from .checks import IMAGE_CHECKS, ROW_COLUMN, _clean_text, _columns, _ImageChecker, _joined_text, lazy_check, row_label
from .reading import LINE_COLUMN, PROBLEM_COLUMN
from .report import BadRowWarning, LoadReport, SkippedRow
from .schema import DIRECTION_OF, OMNI_FEATURES, SOURCE_TYPES, source_type_of, undecoded
from .shards import FILE_COLUMN, as_stream
from .sources import read_source


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


def _main_process_first():
    """Under torchrun / accelerate launch: rank 0 checks first and writes the cache, the others then read it (a
    barrier each side, as `TrainingArguments.main_process_first`; nesting in it is safe). Alone, or before the
    caller has set up its processes: nothing (each process checks for itself). Creating accelerate's state here would
    fix it for the whole process with default options: `commercemm embed` then found itself alone in each process of
    `accelerate launch --num_processes 2` on CPUs (its own `PartialState(cpu=True)` came second)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not (dist.is_available() and dist.is_initialized()):
        return contextlib.nullcontext()
    from accelerate import PartialState

    return PartialState().main_process_first()


def _check_cache_file(dataset: Dataset, fingerprint: str, cache: dict) -> str | None:
    """Where the checked rows of an in-memory dataset (JSON Lines / CSV read by `reading.py`) are cached: datasets
    caches a `map` only next to a dataset's own cache files, so without them the result would be checked again at
    every load. None when the dataset has cache files (datasets' own place), or caching is off."""
    if dataset.cache_files or cache.get("keep_in_memory") or not datasets.is_caching_enabled():
        return None
    folder = Path(cache.get("cache_dir") or datasets.config.HF_DATASETS_CACHE).expanduser() / "commercemm_checks"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"check-{fingerprint}.arrow")


def _load_split(dataset: Dataset, split: str, plan: _Plan, base_dir: Path, on_bad_rows: str, embed: bool,
                num_proc: int | None, description: str, report: LoadReport, max_warnings: int,
                image_check: str = "full", cache: dict | None = None) -> Dataset:
    used = sorted({column for columns in plan.inputs.values() for column in columns
                   if column in dataset.column_names})
    dataset = undecoded(dataset, used)
    used, read_problems, features = _checked_features(dataset, plan)
    check = _row_check(plan, _ImageChecker(base_dir, embed, mode=image_check))
    # The check's result is cached under this fingerprint (the rows, the columns and options chosen, the check's
    # code, where images are looked for) and reused by the next load: images changed in place since are not
    # checked again unless load_from_cache_file=False is passed.
    fingerprint = Hasher.hash((dataset._fingerprint, plan.kind, plan.inputs, plan.check_row, str(base_dir), embed,
                               image_check, "check-v2"))
    cache = cache or {}
    if len(dataset) == 0:  # datasets' map adds no columns to an empty dataset
        checked = Dataset.from_dict({name: [] for name in features}, features=features)
    else:
        with _main_process_first():
            checked = dataset.map(check, remove_columns=used + read_problems, features=features, num_proc=num_proc,
                                  load_from_cache_file=cache.get("load_from_cache_file", True),
                                  cache_file_name=_check_cache_file(dataset, fingerprint, cache),
                                  new_fingerprint=fingerprint, desc=f"Checking {plan.kind} rows ({split})")
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
    check = _row_check(plan, _ImageChecker(base_dir, embed, mode=image_check, cache=False))
    position = {"index": -1}
    report.rows_read.setdefault(split, 0)
    report.rows_kept.setdefault(split, 0)
    lazy = None
    if image_check == "lazy":  # the images are decoded (and so checked) by the collator, per batch
        images = [name for name, feature in plan.features.items() if isinstance(feature, Image)]
        lazy = lazy_check(report, split, description, on_bad_rows, max_warnings, images)
        features = Features({**features, **{name: Image(decode=False) for name in images},
                             ROW_COLUMN: Value("string")})
    bookkeeping = ("__problems__", "__cleared__", LINE_COLUMN, FILE_COLUMN)
    out_features = Features({name: feature for name, feature in features.items() if name not in bookkeeping})

    def keep(row, checked) -> bool:
        position["index"] += 1
        report.rows_read[split] += 1
        if not checked["__problems__"]:
            report.rows_kept[split] += 1
            for what in filter(None, checked["__cleared__"].split(",")):
                report.cleared[what] += 1
            return True
        bad = SkippedRow(split, position["index"], checked["__problems__"], row.get(LINE_COLUMN), row.get(FILE_COLUMN))
        if on_bad_rows == "raise":
            raise ValueError(f"Bad {bad.where()} in {description}: {bad.reason}.")
        report.skipped.append(bad)
        if len(report.skipped) <= max_warnings:
            warnings.warn(f"Skipping {bad.where()} in {description}: {bad.reason}", BadRowWarning, stacklevel=2)
        return False

    def check_batch(batch: dict) -> dict:
        # One batched map checks, drops and relabels rows: a map, a filter and a column removal per row cost
        # more than the check itself (datasets encodes each row's features at each step)
        out = {name: [] for name in out_features}
        names = list(batch)
        for values in zip(*batch.values()):
            row = dict(zip(names, values))
            checked = check(row)
            if not keep(row, checked):
                continue
            if lazy is not None:  # the row's label (index as read, line, file), for the collator's warning
                checked[ROW_COLUMN] = row_label(lazy.key, position["index"], row.get(LINE_COLUMN),
                                                row.get(FILE_COLUMN))
            for name in out:
                out[name].append(checked[name] if name in checked else row[name])
        return out

    # datasets yields the rows of a map given `features` as they are (no per-row encode and decode): right for the
    # lazy check's undecoded images; the header and full checks' rows get their features (images decoded) as they
    # leave the stream, after any shuffle buffer
    checked = stream.map(check_batch, batched=True, batch_size=256, remove_columns=list(stream.column_names),
                         features=out_features if lazy is not None else None)
    return checked if lazy is not None else checked.cast(out_features)


def _load(source, split, plan: _Plan, optional: set[str], on_bad_rows: str, embed: bool, num_proc, max_warnings,
          image_root, load_kwargs, streaming: bool = False,
          image_check: str | None = None) -> tuple[Dataset | DatasetDict | IterableDataset, LoadReport]:
    if on_bad_rows not in ("skip", "raise"):
        raise ValueError(f"on_bad_rows must be 'skip' or 'raise', got {on_bad_rows!r}.")
    is_stream = streaming or isinstance(source, IterableDataset)
    image_check = image_check or ("lazy" if is_stream else "full")
    if image_check not in IMAGE_CHECKS:
        raise ValueError(f"image_check must be one of {IMAGE_CHECKS}, got {image_check!r}.")
    if image_check == "lazy" and not is_stream:
        raise ValueError("image_check='lazy' checks images per batch as a stream is collated: pass streaming=True "
                         "(without streaming the check runs once and is cached).")
    # ids and texts are read as strings (no type inference); images and labels keep their types
    string_columns = {column for canonical, columns in plan.inputs.items() if canonical not in ("image", "label",
                                                                                                 "source_image")
                      for column in columns}
    cache = {"load_from_cache_file": load_kwargs.pop("load_from_cache_file", True),  # not datasets.load_dataset's
             **{key: load_kwargs[key] for key in ("cache_dir", "keep_in_memory") if key in load_kwargs}}
    loaded, base_dir, description = read_source(source, split, load_kwargs, string_columns, streaming)
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
                                report, max_warnings, image_check, cache)
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
        num_proc: processes for checking rows (`datasets.map(num_proc=...)`; without streaming).
        streaming: return a `datasets.IterableDataset` read shard by shard, its rows checked as they are read (bad
            rows dropped and counted in the report as the stream is iterated); an `IterableDataset` passed in is
            always streamed.
        image_check: "full" (open, verify and decode every image once; the default without streaming), "header"
            (open the header: size, mode and a JPEG / PNG end marker, no decode) or "lazy" (streams only, their
            default: find the file as the row is read, and check the image when the collator decodes its batch,
            a bad row left out of the batch and counted in the report; the stream's images are then undecoded
            `{"bytes", "path"}` values with a `__row__` column naming the row, see `checks.decode_lazy_rows`).
        max_warnings: how many bad rows get a warning each (then one warning for the rest). `load_kwargs` go to
            `datasets.load_dataset` / `load_from_disk`.
            Without streaming the check runs once per fingerprint (rows, options, image folder) and is cached (in
            the dataset's cache folder, or `cache_dir` / `HF_DATASETS_CACHE` for JSON Lines / CSV files); the next
            load, and the other processes of a distributed run (rank 0 checks first), read it and report the same
            bad rows. `load_from_cache_file=False` checks again (e.g. after images were replaced in place).

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
