"""A full disk while saving, named as such.

PyTorch's zip writer reports a full disk as `RuntimeError: [enforce fail at inline_container.cc:672] ...
PytorchStreamWriter failed writing file data/0: file write failed`, safetensors as `SafetensorError: Error while
serializing: I/O error: No space left on device`, json writes as a bare `OSError: [Errno 28]`, deep in a traceback.
`disk_full_named(folder)` turns either into one `OSError(ENOSPC)` that
says what was being saved where, how much space is left, and what to do.

Example:
    >>> import tempfile
    >>> with disk_full_named(tempfile.gettempdir(), "checkpoint"):
    ...     pass  # a save that fits
"""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager


#: below this many free bytes after a failed write, a write failure without an errno is taken for a full disk
NEARLY_FULL_BYTES = 64 * 2**20
_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed writing", "file write failed", "inline_container.cc")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(folder) -> int | None:
    """Free bytes on the device holding `folder` (or its nearest existing parent), None when unknown."""
    path = os.path.abspath(os.fspath(folder))
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_disk_full(error: BaseException, folder) -> bool:
    """Whether `error` (or an error it came from) means the device of `folder` ran out of space or quota."""
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in _NO_SPACE:
            return True
        message = str(link)
        if "No space left on device" in message or "Disk quota exceeded" in message:
            return True
        if isinstance(link, RuntimeError) and any(part in message for part in _TORCH_WRITE_FAILED):
            free = free_bytes(folder)
            return free is not None and free < NEARLY_FULL_BYTES
    return False


@contextmanager
def disk_full_named(folder, what: str = "checkpoint"):
    """Run a save; a full disk becomes `OSError(ENOSPC, ...)` naming `what`, `folder` and the free space."""
    try:
        yield
    except Exception as error:  # OSError, torch's RuntimeError, safetensors' SafetensorError, ...
        if not is_disk_full(error, folder):
            raise
        free = free_bytes(folder)
        left = f"{free / 2**20:.1f} MiB free" if free is not None else "free space unknown"
        raise OSError(
            errno.ENOSPC,
            f"No space left on device while saving the {what} to {folder} ({left}). Free "
            "some space, choose another --output_dir, or keep fewer checkpoints (--save_total_limit); "
            f"the partly written {what} is incomplete.",
        ) from error


__all__ = ["disk_full_named", "free_bytes", "is_disk_full"]
