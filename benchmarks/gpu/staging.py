"""Splitting a file into parts small enough to travel, and joining them back with a checksum (stdlib only).

The GPU machine takes at most 64 MiB per command and the SmolLM2 GGUF is 98 MB: it travels
in two parts, one per command, and is joined on the machine (docs/gpu.md).

Example:
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "weights.bin")
    >>> _ = open(path, "wb").write(b"0123456789")
    >>> manifest = split_file(path, [4], [os.path.join(folder, "a"), os.path.join(folder, "b")])
    >>> [part["size"] for part in manifest["parts"]]
    [4, 6]
    >>> join_parts(manifest, [os.path.join(folder, "a"), os.path.join(folder, "b")], os.path.join(folder, "joined"))
    >>> open(os.path.join(folder, "joined"), "rb").read()
    b'0123456789'
"""

from __future__ import annotations

import hashlib
import os
import shutil

MIB = 1024 * 1024
CHUNK = 8 * MIB


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def split_file(path: str, part_sizes: list[int], part_folders: list[str]) -> dict:
    """Cut ``path`` into ``len(part_folders)`` parts: the first ones of ``part_sizes`` bytes, the last one the rest.

    Each part is written as ``<folder>/<name>.part<i>``; returns the manifest (name, size, sha256 of the
    whole file and of each part) that :func:`join_parts` checks.
    """
    if len(part_sizes) != len(part_folders) - 1:
        raise ValueError("give one size per part but the last (which takes the rest)")
    name = os.path.basename(path)
    parts = []
    with open(path, "rb") as source:
        for index, folder in enumerate(part_folders, start=1):
            os.makedirs(folder, exist_ok=True)
            part_path = os.path.join(folder, f"{name}.part{index}")
            remaining = part_sizes[index - 1] if index <= len(part_sizes) else None
            with open(part_path, "wb") as target:
                while remaining is None or remaining > 0:
                    block = source.read(CHUNK if remaining is None else min(CHUNK, remaining))
                    if not block:
                        break
                    target.write(block)
                    if remaining is not None:
                        remaining -= len(block)
            parts.append({"name": os.path.basename(part_path), "size": os.path.getsize(part_path)})
            parts[-1]["sha256"] = sha256_of(part_path)
    return {"file": name, "size": os.path.getsize(path), "sha256": sha256_of(path), "parts": parts}


def join_parts(manifest: dict, part_paths: list[str], target: str) -> None:
    """Join the parts into ``target`` and check the whole file's sha256 against the manifest."""
    missing = [path for path in part_paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            f"missing weight parts {missing}: on the GPU machine, files survive between commands only while the "
            "machine stays warm (about 30 s idle); run part 1 and part 2 again, back to back (docs/gpu.md)"
        )
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with open(target, "wb") as joined:
        for path in part_paths:
            with open(path, "rb") as part:
                shutil.copyfileobj(part, joined, CHUNK)
    digest = sha256_of(target)
    if digest != manifest["sha256"] or os.path.getsize(target) != manifest["size"]:
        os.remove(target)
        raise ValueError(f"{manifest['file']}: joined file has sha256 {digest}, expected {manifest['sha256']}")
