"""Writing a file so that a crash (a killed process, a lost machine) leaves the old file or the new one, never
half of one."""

from __future__ import annotations

import os


def write_text_atomically(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` through a temporary sibling, flushed to disk and then renamed over ``path``.

    ``os.replace`` alone is not enough: after a crash a file system may keep the rename but not yet the data it
    names, which reads back as an empty or truncated file; ``fsync`` before the rename rules that out.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = write_text_atomically(os.path.join(folder, "notes.txt"), "first")
        ...     path = write_text_atomically(path, "second")
        ...     print(open(path, encoding="utf-8").read(), os.listdir(folder))
        second ['notes.txt']
    """
    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


__all__ = ["write_text_atomically"]
