"""What loading kept and skipped: `LoadReport`, its `SkippedRow`s, and the `BadRowWarning` each skipped row gets
(used by `loading` and by the per-batch image check in `checks`).

Example:
    >>> report = LoadReport("rows.jsonl", "image-text", {"train": 2}, {"train": 1},
    ...                     [SkippedRow("train", 1, "image: missing image", line=2)])
    >>> print(report)
    Loaded image-text rows from rows.jsonl: kept 1 of 2, skipped 1.
      1 x image: missing image
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


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


__all__ = ["BadRowWarning", "LoadReport", "SkippedRow"]
