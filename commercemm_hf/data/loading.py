"""Load a user's own data as image-text rows or Omni-Retrieval rows (DESIGN.md section 3).

`source` may be:

* a `datasets.Dataset` / `DatasetDict` object, or a folder written by `save_to_disk` (either kind);
* a JSON Lines / JSON / CSV / TSV / Parquet file whose image columns hold paths, relative to the file's folder
  (absolute paths work too);
* any other folder: handed to `datasets.load_dataset(folder)`, so an image folder (`imagefolder`, with
  `metadata.jsonl` / `metadata.csv`; further image columns as `<name>_file_name`) or a folder of data files;
* otherwise a Hub dataset name, passed to `datasets.load_dataset(name, **load_kwargs)`.

Columns are renamed to the canonical names (`image`, `text`, `label`, `product_id`; for Omni rows
`source_type`, `source_text`, `source_image`, `product_id`, `image`, `text`); other columns are kept as they are.
Every row is checked once: each image it needs is opened with PIL (`verify()` and a full `load()`), texts it needs
must not be empty or whitespace, a `product_id` must be present. A bad row is either skipped, with a
`BadRowWarning` naming its split, index and reason and an entry in the returned `LoadReport`
(`on_bad_rows="skip"`), or raises a `ValueError` naming it (`on_bad_rows="raise"`). The report's counts always add
up: rows read = rows kept + rows skipped, per split. Image columns come back as lazily decoded `Image()` features.

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
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict, Features, Image, Value
from datasets.fingerprint import Hasher
from PIL import Image as PILImage


SOURCE_TYPES = ("query", "view", "post")
_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


class BadRowWarning(UserWarning):
    """A row of a user's dataset was skipped (see `LoadReport`)."""


@dataclass(frozen=True)
class SkippedRow:
    """A row left out while loading: its split, its 0-based index in that split as read, and why."""

    split: str
    index: int
    reason: str


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


def _read_source(source, split: str | None, load_kwargs: dict) -> tuple[Dataset | DatasetDict, Path, str]:
    """(dataset or dataset dict, folder that relative image paths are resolved against, description)."""
    if isinstance(source, (Dataset, DatasetDict)):
        return (source[split] if split is not None and isinstance(source, DatasetDict) else source), Path.cwd(), \
            f"<{type(source).__name__}>"
    text = os.fspath(source)
    path = Path(text).expanduser()
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
        return datasets.load_dataset(str(path), split=split, **load_kwargs), path.resolve(), str(path)
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"Cannot read {path}: expected one of {sorted(_FILE_BUILDERS)} (or a folder).")
        if path.suffix.lower() == ".tsv":
            load_kwargs = {"delimiter": "\t", **load_kwargs}
        loaded = datasets.load_dataset(builder, data_files=str(path), split=split or "train", **load_kwargs)
        return loaded, path.resolve().parent, str(path)
    if isinstance(source, os.PathLike) or text.startswith((".", "/", "~")) or path.suffix.lower() in _FILE_BUILDERS:
        raise FileNotFoundError(f"No such file or folder: {text}")
    return datasets.load_dataset(text, split=split, **load_kwargs), Path.cwd(), text


# ----------------------------------------------------------------------------------------------------------------
# Checking values
# ----------------------------------------------------------------------------------------------------------------


def _open_check(opener) -> str | None:
    """None when the image opens, verifies and fully decodes; else the error."""
    try:
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

    def __init__(self, base_dir: Path, embed: bool):
        self.base_dir, self.embed = base_dir, embed
        self.cache: dict[str, tuple[dict | None, str | None]] = {}

    def _resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        if candidate.is_absolute():
            return candidate
        relative = self.base_dir / candidate
        return relative if relative.exists() or not candidate.exists() else candidate.resolve()

    def __call__(self, value) -> tuple[dict | None, str | None]:
        """(value for an `Image()` column, problem or None)."""
        if isinstance(value, dict) and value.get("bytes"):
            data = value["bytes"]
            problem = _open_check(lambda: io.BytesIO(data))
            return ({"bytes": data, "path": value.get("path")}, None) if problem is None else \
                (None, f"unreadable image ({problem})")
        path = value.get("path") if isinstance(value, dict) else value
        if path is None or (isinstance(path, str) and not path.strip()):
            return None, "missing image"
        if not isinstance(path, str):
            return None, f"not an image path ({path!r})"
        if path not in self.cache:
            self.cache[path] = self._check_file(self._resolve(path.strip()))
        return self.cache[path]

    def _check_file(self, path: Path) -> tuple[dict | None, str | None]:
        if not path.is_file():
            return None, f"image file not found ({path})"
        problem = _open_check(lambda: str(path))
        if problem is not None:
            return None, f"unreadable image file ({path}: {problem})"
        return {"bytes": path.read_bytes() if self.embed else None, "path": str(path)}, None


def _clean_text(value) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def _joined_text(values: Sequence) -> str | None:
    """The text of one column, or the non-empty parts of several joined with '. ' (e.g. title + description)."""
    parts = [part.strip() for part in map(_clean_text, values) if part is not None]
    return ". ".join(part.rstrip(".") if i < len(parts) - 1 else part for i, part in enumerate(parts)) or None


def _columns(spec: str | Sequence[str]) -> list[str]:
    return [spec] if isinstance(spec, str) else list(spec)


def _undecoded(dataset: Dataset, columns: list[str]) -> Dataset:
    for column in columns:
        if isinstance(dataset.features.get(column), Image) and dataset.features[column].decode:
            dataset = dataset.cast_column(column, Image(decode=False))
    return dataset


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


def _load_split(dataset: Dataset, split: str, plan: _Plan, base_dir: Path, on_bad_rows: str, embed: bool,
                num_proc: int | None, description: str, report: LoadReport, max_warnings: int) -> Dataset:
    used = sorted({column for columns in plan.inputs.values() for column in columns
                   if column in dataset.column_names})
    dataset = _undecoded(dataset, used)
    passthrough = [column for column in dataset.column_names if column not in used]
    features = Features({**plan.features, **{column: dataset.features[column] for column in passthrough},
                         "__problems__": Value("string"), "__cleared__": Value("string")})
    if plan.inputs.get("label"):  # keep the label's own feature (e.g. ClassLabel names, or strings)
        features["label"] = dataset.features[plan.inputs["label"][0]]
    images = _ImageChecker(base_dir, embed)

    def check(row):
        values, problems, cleared = plan.check_row(
            {canonical: [row.get(column) for column in columns] if columns else [None]
             for canonical, columns in plan.inputs.items()}, images)
        return {**values, "__problems__": "; ".join(problems), "__cleared__": ",".join(cleared)}

    fingerprint = Hasher.hash((dataset._fingerprint, plan.kind, plan.inputs, str(base_dir), embed, "check-v1"))
    checked = dataset.map(check, remove_columns=used, features=features, num_proc=num_proc,
                          load_from_cache_file=False, new_fingerprint=fingerprint,
                          desc=f"Checking {plan.kind} rows ({split})")
    problems = list(checked["__problems__"])
    bad = [(index, reason) for index, reason in enumerate(problems) if reason]
    if bad and on_bad_rows == "raise":
        index, reason = bad[0]
        more = f" ({len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise ValueError(f"Bad row {index} (0-based) of split {split!r} in {description}: {reason}{more}.")
    for index, reason in bad:
        report.skipped.append(SkippedRow(split, index, reason))
        if len(report.skipped) <= max_warnings:
            warnings.warn(f"Skipping row {index} (0-based) of split {split!r} in {description}: {reason}",
                          BadRowWarning, stacklevel=4)
    cleared_values = list(checked["__cleared__"])
    good = [index for index, reason in enumerate(problems) if not reason]
    for index in good:
        for what in filter(None, cleared_values[index].split(",")):
            report.cleared[what] += 1
    report.rows_read[split] = len(checked)
    report.rows_kept[split] = len(good)
    kept = checked.select(good) if bad else checked
    return kept.remove_columns(["__problems__", "__cleared__"])


def _load(source, split, plan: _Plan, optional: set[str], on_bad_rows: str, embed: bool, num_proc, max_warnings,
          image_root, load_kwargs) -> tuple[Dataset | DatasetDict, LoadReport]:
    if on_bad_rows not in ("skip", "raise"):
        raise ValueError(f"on_bad_rows must be 'skip' or 'raise', got {on_bad_rows!r}.")
    loaded, base_dir, description = _read_source(source, split, load_kwargs)
    if image_root is not None:
        base_dir = Path(image_root).expanduser().resolve()
    if not isinstance(loaded, (Dataset, DatasetDict)):
        raise TypeError(f"Expected a Dataset or DatasetDict from {description}, got {type(loaded).__name__} "
                        "(streaming datasets are not supported here).")
    report = LoadReport(description, plan.kind)
    splits = loaded if isinstance(loaded, DatasetDict) else {split or "train": loaded}
    out = {}
    for name, dataset in splits.items():
        present = {canonical: [c for c in columns if c in dataset.column_names] if canonical in optional else columns
                   for canonical, columns in plan.inputs.items()}
        split_plan = _Plan(plan.kind, present, plan.features, plan.check_row)
        _require_columns(dataset, split_plan, optional)
        out[name] = _load_split(dataset, name, split_plan, base_dir, on_bad_rows, embed, num_proc, description,
                                report, max_warnings)
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
                            num_proc: int | None = None, max_warnings: int = 20, **load_kwargs) -> tuple[Dataset | DatasetDict, LoadReport]:
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
            text = _joined_text(values["text"])
            if text is None and require_text:
                problems.append("text: empty text")
            out["text"] = text or ""
        if "label" in values:
            out["label"] = values["label"][0]
            if out["label"] is None:
                problems.append("label: missing label")
        if "product_id" in values:
            out["product_id"] = _clean_text(values["product_id"][0])
            if out["product_id"] is None:
                problems.append("product_id: missing product_id")
        return out, problems, []

    plan = _Plan("image-text", inputs, features, check_row)
    return _load(source, split, plan, set(), on_bad_rows, embed_images, num_proc, max_warnings, image_root,
                 load_kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Omni rows
# ----------------------------------------------------------------------------------------------------------------


def load_omni_dataset(source, split: str | None = None, source_type_column: str | None = "source_type",
                      source_text_column: str | None = "source_text", source_image_column: str | None = "source_image",
                      product_id_column: str = "product_id", image_column: str = "image",
                      text_column: str | Sequence[str] = "text", on_bad_rows: str = "skip",
                      embed_images: bool = False, image_root=None, num_proc: int | None = None,
                      max_warnings: int = 20, **load_kwargs) -> tuple[Dataset | DatasetDict, LoadReport]:
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
    features = {"source_type": Value("string"), "source_text": Value("string"), "source_image": Image(),
                "product_id": Value("string"), "image": Image(), "text": Value("string")}

    def check_row(values: dict, images: _ImageChecker):
        problems, cleared = [], []
        source_text = _clean_text(values["source_text"][0])
        raw_image = values["source_image"][0]
        has_image = raw_image is not None and not (isinstance(raw_image, dict) and not any(raw_image.values()))
        source_type = _clean_text(values["source_type"][0])
        if source_type is None:
            source_type = {(True, False): "query", (False, True): "view", (True, True): "post"}.get(
                (source_text is not None, has_image))
            if source_type is None:
                problems.append("source: neither a source text nor a source image")
        else:
            source_type = source_type.strip().lower()
            if source_type not in SOURCE_TYPES:
                problems.append(f"source_type: unknown source_type {source_type!r} (expected one of {SOURCE_TYPES})")
        source_image = None
        if source_type in ("view", "post"):
            source_image, problem = images(raw_image)
            if problem:
                problems.append(f"source_image: {problem}")
        elif source_type == "query" and has_image:
            cleared.append("source_image of query rows")
        if source_type in ("query", "post") and source_text is None:
            problems.append("source_text: empty " + ("query text" if source_type == "query" else "post caption"))
        if source_type == "view" and source_text is not None:
            cleared.append("source_text of view rows")
            source_text = None
        product_id = _clean_text(values["product_id"][0])
        if product_id is None:
            problems.append("product_id: missing product_id")
        image, problem = images(values["image"][0])
        if problem:
            problems.append(f"image: {problem}")
        text = _joined_text(values["text"])
        if text is None:
            problems.append("text: empty product text")
        out = {"source_type": source_type, "source_text": source_text, "source_image": source_image,
               "product_id": product_id.strip() if product_id else None, "image": image, "text": text}
        return out, problems, cleared

    plan = _Plan("omni", inputs, features, check_row)
    return _load(source, split, plan, optional, on_bad_rows, embed_images, num_proc, max_warnings, image_root,
                 load_kwargs)


__all__ = ["BadRowWarning", "LoadReport", "SkippedRow", "load_image_text_dataset", "load_omni_dataset"]
