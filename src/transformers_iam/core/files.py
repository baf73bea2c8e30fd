"""Writing a file so that a crash (a killed process, a lost machine) leaves the old file or the new one, never
half of one.

The one writer for the small text files the package saves: ``item_catalog.json`` here in ``core``, and a run's
``experiment.json``, ``metrics.json`` and ``report.md`` in ``experiments`` (which may import ``core``, not the
reverse).
"""

from __future__ import annotations

import os
from collections.abc import Callable


def write_text_atomically(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` through a temporary sibling, flushed to disk and then renamed over ``path``.

    ``os.replace`` alone is not enough: after a crash a file system may keep the rename but not yet the data it
    names, which reads back as an empty or truncated file; ``fsync`` before the rename rules that out. A write that
    fails leaves ``path`` as it was and removes its temporary file.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = write_text_atomically(os.path.join(folder, "notes.txt"), "first")
        ...     path = write_text_atomically(path, "second")
        ...     print(open(path, encoding="utf-8").read(), os.listdir(folder))
        second ['notes.txt']
    """
    if not isinstance(text, str):
        raise TypeError(f"write_text_atomically writes a str to {os.fspath(path)}, got {type(text).__name__}")

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)

    return write_file_atomically(path, write)


def write_file_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> str:
    """``write(temporary_path)`` (a library's own writer: safetensors, faiss), then flushed to disk and renamed over
    ``path``, as ``write_text_atomically`` does for text: a failed write leaves ``path`` as it was.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from safetensors.torch import save_file
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "t.safetensors")
        ...     path = write_file_atomically(path, lambda temporary: save_file({"t": torch.ones(2)}, temporary))
        ...     print(os.listdir(folder))
        ['t.safetensors']
    """
    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        # a failed write (disk full, interrupted) leaves the old file as it was, and no temporary file beside it
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


__all__ = ["write_file_atomically", "write_text_atomically"]
