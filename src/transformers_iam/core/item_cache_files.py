"""The item-state cache on disk: its tensors in a safetensors file and its record in ``item_cache.json``, written so
that a crash leaves the old cache or the new one whole, and read back without unpickling anything.

What is written and when it is used: ``ItemStateCache.save`` / ``ItemStateCache.load`` (``item_cache.py``) and
``enable_item_cache(renderer, cache_dir=...)`` (``item_cache_lifecycle.py``); docs/architecture.md, "Compute once".
"""

from __future__ import annotations

import json
import os
import re
import uuid

import torch

from .files import write_file_atomically, write_text_atomically

RECORD_FILE = "item_cache.json"
FORMAT_VERSION = 1


def _is_states_file_name(name) -> bool:
    # only a name write_cache_files writes: a crafted item_cache.json could otherwise name any path to read or delete
    return isinstance(name, str) and re.fullmatch(r"item_states\.[0-9a-f]{12}\.safetensors", name) is not None


def write_cache_files(folder: str | os.PathLike, tensors: dict[str, torch.Tensor], record: dict) -> str:
    """Write ``tensors`` to a new ``item_states.<12 hex>.safetensors`` in ``folder`` (through a temporary file,
    flushed, then renamed), then ``item_cache.json`` (``record`` and the tensors file's name) atomically, then remove
    the file it named before: a crash at any point leaves a json naming a whole tensors file. Returns the json's path.

    Example:
        >>> path = write_cache_files(tmp, {"states": torch.ones(2, 3)}, {"num_layers": 2})
        >>> read_cache_record(tmp)["num_layers"], read_cache_tensors(tmp)["states"].shape
        (2, torch.Size([2, 3]))
    """
    from safetensors.torch import save_file

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    record_path = os.path.join(folder, RECORD_FILE)
    previous = None
    if os.path.isfile(record_path):
        try:
            previous = read_cache_record(folder)["states_file"]
        except ValueError:
            previous = None  # an unreadable record: its tensors file, if any, is left where it is
    name = f"item_states.{uuid.uuid4().hex[:12]}.safetensors"
    stored = {key: value.detach().contiguous().cpu() for key, value in tensors.items()}
    write_file_atomically(os.path.join(folder, name), lambda temporary: save_file(stored, temporary))
    content = {"format_version": FORMAT_VERSION, "states_file": name, **record}
    write_text_atomically(record_path, json.dumps(content, indent=2) + "\n")
    if _is_states_file_name(previous) and previous != name and os.path.exists(os.path.join(folder, previous)):
        os.remove(os.path.join(folder, previous))
    return record_path


def read_cache_record(folder: str | os.PathLike) -> dict | None:
    """The content of ``folder``'s ``item_cache.json``; None when there is none. A ValueError naming the file when it
    is not one ``write_cache_files`` wrote (not JSON, another format version, a states file name it does not write)."""
    path = os.path.join(os.fspath(folder), RECORD_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable item-state cache record: {error}") from error
    if not isinstance(record, dict) or record.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not an item-state cache record of format {FORMAT_VERSION}")
    if not _is_states_file_name(record.get("states_file")):
        raise ValueError(
            f"{path}: states_file {record.get('states_file')!r} is not a name ItemStateCache.save writes "
            "(item_states.<12 hex digits>.safetensors, in the same folder)"
        )
    return record


def read_cache_tensors(folder: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``folder``'s ``item_cache.json`` names (safetensors only: nothing is
    unpickled); a ValueError naming the file when it is missing, truncated or not safetensors."""
    from safetensors.torch import load_file

    record = read_cache_record(folder)
    if record is None:
        raise FileNotFoundError(f"{os.fspath(folder)} has no {RECORD_FILE}: save a cache with ItemStateCache.save")
    path = os.path.join(os.fspath(folder), record["states_file"])
    try:
        return load_file(path, device=str(device))
    except Exception as error:  # safetensors raises its own SafetensorError (and OSError for a missing file)
        raise ValueError(
            f"{path} is not a readable item-state cache (missing, truncated or corrupt): {error}"
        ) from error


__all__ = ["FORMAT_VERSION", "RECORD_FILE", "read_cache_record", "read_cache_tensors", "write_cache_files"]
