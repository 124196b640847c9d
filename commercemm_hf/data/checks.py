"""The checks of a row's values: images (`_ImageChecker`: a full decode, a header check, or only finding the file
with the decode checked per batch), texts and ids; and `decode_lazy_rows`, the per-batch image check of streams
loaded with `image_check="lazy"` (the streaming default), which the collators call.

A lazily checked stream finds each row's image file as the row is read (a stat, no open) and leaves the image
undecoded (`{"bytes", "path"}`, `Image(decode=False)`), with a `ROW_COLUMN` naming the row. The collator decodes
the batch's images once, as training needs anyway, so the check costs no decode of its own; a row whose image does
not open or decode (a cut-off download, a corrupt file, a file removed since) is dropped from the batch (which
shrinks), counted in the load's `LoadReport` (`skipped`, and `rows_kept` one less) and warned with its index, line
and file; with `on_bad_rows="raise"` it is an error naming it.

Example:
    >>> import io, warnings
    >>> from PIL import Image
    >>> png = io.BytesIO(); Image.new("RGB", (4, 4)).save(png, format="PNG")
    >>> report = LoadReport("rows.jsonl", "image-text", {"train": 2}, {"train": 2})
    >>> key = (check := lazy_check(report, "train", "rows.jsonl", "skip", 20, ["image"])).key
    >>> rows = [{"image": {"bytes": png.getvalue(), "path": None}, "text": "a", ROW_COLUMN: row_label(key, 0, 1, None)},
    ...         {"image": {"bytes": b"oops", "path": None}, "text": "b", ROW_COLUMN: row_label(key, 1, 2, None)}]
    >>> with warnings.catch_warnings(record=True):
    ...     warnings.simplefilter("always")
    ...     kept = decode_lazy_rows(rows)
    >>> [(row["text"], row["image"].size) for row in kept], report.rows_kept, report.skipped[0].where()
    ([('a', (4, 4))], {'train': 1}, "row 1 (0-based, line 2) of split 'train'")
"""

from __future__ import annotations

import io
import os
import re
import uuid
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import Image
from PIL import Image as PILImage

from .reading import string_value
from .report import BadRowWarning, LoadReport, SkippedRow


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
IMAGE_CHECKS = ("lazy", "header", "full")


#: the bytes a complete file of the format ends with (possibly followed by a few trailing bytes)
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}


def _tail(opener, size: int = 4096) -> bytes:
    source = opener()
    handle = open(source, "rb") if isinstance(source, str) else source
    with handle:
        handle.seek(max(0, handle.seek(0, os.SEEK_END) - size))
        return handle.read()


def _open_check(opener, full: bool = True) -> str | None:
    """None when the image opens, verifies and fully decodes (`full`), or when its header opens with a size and a
    mode and a JPEG / PNG file ends with its end marker (not `full`: no decode, ~0.2 ms a file); else the error.

    The end marker is why a cut-off download fails here, not at decode time in the middle of training: its header
    still opens."""
    try:
        if not full:
            with PILImage.open(opener()) as image:
                if image.width < 1 or image.height < 1:
                    return "empty image"
                if not image.mode:
                    return "image without a mode"
                marker = _END_MARKERS.get(image.format)
            if marker and marker not in _tail(opener):
                return f"truncated {image.format} file (no end marker)"
            return None
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

    def __init__(self, base_dir: Path, embed: bool, mode: str = "full", cache: bool = True):
        # "full": open, verify, decode; "header": open the header (and look for the end marker); "lazy": find the
        # file only, the decode for training checks the rest (`decode_lazy_rows`)
        self.base_dir, self.embed, self.mode, self.full = base_dir, embed, mode, mode == "full"
        # a stream reads each row once: no per-path cache growing with the catalog
        self.cache: dict[str, tuple[dict | None, str | None]] | None = {} if cache else None

    def _resolve(self, path: str) -> Path:
        # Relative paths start from the data's own folder only, never from the working directory: a file that is
        # missing there must not be replaced by a same-named file wherever the program happens to run.
        if path.startswith("~"):
            candidate = Path(path).expanduser()
            return candidate if candidate.is_absolute() else self.base_dir / candidate
        return self.base_dir / path  # an absolute path replaces base_dir (one parse a row: streams check each row)

    def __call__(self, value) -> tuple[dict | None, str | None]:
        """(value for an `Image()` column, problem or None)."""
        if isinstance(value, PILImage.Image):  # a decoded image, e.g. from a user's map over a stream
            if value.width < 1 or value.height < 1:
                return None, "unreadable image (empty image)"
            return Image().encode_example(value), None
        if isinstance(value, dict) and value.get("bytes"):
            data = value["bytes"]
            problem = None if self.mode == "lazy" else _open_check(lambda: io.BytesIO(data), self.full)
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
        problem = None if self.mode == "lazy" else _open_check(lambda: str(path), self.full)
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
# The per-batch image check of lazily checked streams
# ----------------------------------------------------------------------------------------------------------------

#: the column naming each row of a lazily checked stream ("key:index:line:file"), read by `decode_lazy_rows`
ROW_COLUMN = "__row__"


@dataclass(eq=False)
class LazyCheck:
    """Where the per-batch check of one loaded stream counts its bad rows (`lazy_check`); its rows carry `key`."""

    key: str
    report: LoadReport
    split: str
    description: str
    on_bad_rows: str
    max_warnings: int
    columns: list[str]  # the rows' image columns

    def __setstate__(self, state):  # unpickled in a spawned data loader worker: findable there too
        self.__dict__.update(state)
        _LAZY_CHECKS[self.key] = self


# The rows carry a key, not the report: rows go through datasets' Arrow encoding and the data loader's workers.
# An entry lives as long as its stream's check function holds it (weak values: loading many streams does not pile
# up reports); a worker process has its own copy, so its counts stay there (as the stream's own counts do).
_LAZY_CHECKS: weakref.WeakValueDictionary[str, LazyCheck] = weakref.WeakValueDictionary()


def lazy_check(report: LoadReport, split: str, description: str, on_bad_rows: str, max_warnings: int,
               columns: Sequence[str]) -> LazyCheck:
    """Register where the bad rows of a lazily checked stream are counted. The caller keeps the returned object
    alive as long as its rows may be collated (the stream's check function holds it)."""
    check = LazyCheck(uuid.uuid4().hex[:12], report, split, description, on_bad_rows, max_warnings, list(columns))
    _LAZY_CHECKS[check.key] = check
    return check


def row_label(key: str, index: int, line: int | None, file: str | None) -> str:
    return f"{key}:{index}:{line or ''}:{file or ''}"


def _decode(value):
    """The PIL image of an undecoded image value (None stays None), as datasets' `Image()` decodes it."""
    if value is None or isinstance(value, PILImage.Image):
        return value
    return Image().decode_example(value if isinstance(value, dict) else {"path": value, "bytes": None})


def decode_lazy_rows(rows: Sequence[dict]) -> list[dict]:
    """The rows of a batch with their undecoded images decoded; a row of a lazily checked stream whose image fails
    to open or decode is left out, counted in its load's report and warned naming it (see the module docstring).
    Rows of other datasets (without `ROW_COLUMN`) are returned as they are. An error when no row is left (the
    batch cannot shrink to nothing).

    Example:
        >>> decode_lazy_rows([{"text": "a"}])
        [{'text': 'a'}]
    """
    if not rows or ROW_COLUMN not in rows[0]:
        return list(rows)
    kept, bad = [], []
    for row in rows:
        key, index, line, file = row[ROW_COLUMN].split(":", 3)
        check = _LAZY_CHECKS.get(key)
        columns = check.columns if check is not None else [name for name, value in row.items()
                                                            if isinstance(value, dict) and "path" in value]
        out, problems = {name: value for name, value in row.items() if name != ROW_COLUMN}, []
        for column in columns:
            try:
                out[column] = _decode(row.get(column))
            except Exception as error:  # PIL raises many kinds of errors for broken files
                path = row[column].get("path") if isinstance(row[column], dict) else row[column]
                problems.append(f"{column}: unreadable image{f' file ({path}: ' if path else ' ('}"
                                f"{type(error).__name__}: {error})")
        if not problems:
            kept.append(out)
            continue
        skipped = SkippedRow(check.split if check else "train", int(index), "; ".join(problems),
                             int(line) if line else None, file or None)
        bad.append(skipped)
        description = check.description if check else "a lazily checked stream"
        if check is not None and check.on_bad_rows == "raise":
            raise ValueError(f"Bad {skipped.where()} in {description}: {skipped.reason}.")
        if check is not None:
            check.report.skipped.append(skipped)
            check.report.rows_kept[check.split] -= 1  # it was counted as kept when the stream read it
        if check is None or len(check.report.skipped) <= check.max_warnings:
            warnings.warn(f"Skipping {skipped.where()} in {description} (at collation): {skipped.reason}",
                          BadRowWarning, stacklevel=3)
    if not kept:
        raise ValueError(f"Every row of this batch has an unreadable image (first: {bad[0].where()}: "
                         f"{bad[0].reason}).")
    return kept


__all__ = ["IMAGE_CHECKS", "ROW_COLUMN", "LazyCheck", "decode_lazy_rows", "lazy_check", "row_label"]
