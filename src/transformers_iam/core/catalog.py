"""The item catalog: item ids, their catalog indices (the adapter's output order) and texts."""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence

from transformers.utils import logging

from .files import write_text_atomically
from .loading import hub_arguments, optional_checkpoint_file

logger = logging.get_logger(__name__)

CATALOG_FILE_NAME = "item_catalog.json"


def catalog_fingerprint(item_ids: Sequence[str]) -> str:
    """A sha256 of the item ids in catalog order: what binds a checkpoint's adapter rows to its catalog.

    Texts are left out on purpose: re-rendering item texts does not move an item's row, reordering ids does.

    Example:
        >>> catalog_fingerprint(["1", "2"]) == catalog_fingerprint(["2", "1"])
        False
    """
    return hashlib.sha256(json.dumps([str(item_id) for item_id in item_ids]).encode("utf-8")).hexdigest()


def _normalise_item_id(item_id, position: int) -> str:
    # ints become their decimal text (data files store ids as text); anything else would be a silent
    # str() (1.0 -> "1.0", None -> "None") that never matches the ids in the data
    if isinstance(item_id, str):
        if not item_id.strip():
            raise ValueError(f"item_ids[{position}] is an empty string; item ids must be non-empty strings")
        return item_id
    if isinstance(item_id, numbers.Integral) and not isinstance(item_id, bool):
        return str(int(item_id))
    raise ValueError(
        f"item_ids[{position}] = {item_id!r} ({type(item_id).__name__}); item ids must be strings (or ints, "
        "kept as their decimal text)"
    )


class ItemCatalog:
    """An ordered catalog. Catalog index ``i`` is the adapter's ``i``-th score.

    Item ids are kept as strings (``5`` and ``"5"`` name the same item), since data files
    store them as text; any other type (a float, ``None``) is refused rather than turned into
    text that matches nothing. ``fingerprint`` (ids in order) is what a checkpoint records.

    Example:
        >>> catalog = ItemCatalog(["1", "2"], ["Toy Story (1995)", "GoldenEye (1995)"])
        >>> catalog.index_of(2), catalog.text_of("1"), len(catalog)
        (1, 'Toy Story (1995)', 2)
    """

    def __init__(self, item_ids: Sequence, texts: Sequence[str]):
        if isinstance(item_ids, (str, bytes)) or isinstance(texts, (str, bytes)):
            raise ValueError("ItemCatalog takes a list of item ids and a list of texts, not a single string")
        if len(item_ids) != len(texts):
            raise ValueError(f"ItemCatalog got {len(item_ids)} item ids but {len(texts)} texts")
        if not item_ids:
            raise ValueError("ItemCatalog needs at least one item")
        self.item_ids = [_normalise_item_id(item_id, position) for position, item_id in enumerate(item_ids)]
        self.texts = list(texts)
        self._index: dict[str, int] = {}
        for index, item_id in enumerate(self.item_ids):
            if item_id in self._index:
                raise ValueError(
                    f"item id {item_id!r} appears twice in the catalog (indices {self._index[item_id]}, {index})"
                )
            if not isinstance(self.texts[index], str) or not self.texts[index].strip():
                raise ValueError(f"item {item_id!r} has an empty text")
            self._index[item_id] = index

    @classmethod
    def from_dict(cls, items: Mapping) -> ItemCatalog:
        """From ``{item_id: text}``, in the mapping's order."""
        return cls(list(items.keys()), list(items.values()))

    @property
    def fingerprint(self) -> str:
        """:func:`catalog_fingerprint` of this catalog's ids, in order."""
        return catalog_fingerprint(self.item_ids)

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id) -> bool:
        return str(item_id) in self._index

    def __eq__(self, other) -> bool:
        return isinstance(other, ItemCatalog) and self.item_ids == other.item_ids and self.texts == other.texts

    def index_of(self, item_id) -> int:
        try:
            return self._index[str(item_id)]
        except KeyError:
            raise KeyError(f"item {item_id!r} is not in the catalog ({len(self)} items)") from None

    def indices_of(self, item_ids: Iterable) -> list[int]:
        return [self.index_of(item_id) for item_id in item_ids]

    def text_of(self, item_id) -> str:
        return self.texts[self.index_of(item_id)]

    def ids_of(self, indices: Iterable[int]) -> list[str]:
        return [self.item_ids[int(index)] for index in indices]

    def to_records(self) -> list[dict]:
        return [
            {"index": index, "item_id": item_id, "text": text}
            for index, (item_id, text) in enumerate(zip(self.item_ids, self.texts))
        ]

    def save(self, directory: str | os.PathLike) -> str:
        """Write ``item_catalog.json`` into ``directory``, atomically: a crash leaves the old file or the new one,
        never half of one."""
        text = json.dumps({"items": self.to_records()}, ensure_ascii=False, indent=0)
        return write_text_atomically(os.path.join(directory, CATALOG_FILE_NAME), text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ItemCatalog:
        """Load from a checkpoint folder or an ``item_catalog.json`` file.

        A truncated or hand-edited file is refused with its path and what is wrong, never half loaded.
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, CATALOG_FILE_NAME)
        try:
            with open(path, encoding="utf-8") as handle:
                content = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}:{error.lineno}:{error.colno}: not a valid item catalog ({error.msg}); the file is corrupt or "
                "truncated: save the model with its catalog again"
            ) from None
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not a valid item catalog (not UTF-8: {error.reason})") from None
        if not isinstance(content, dict) or not isinstance(content.get("items"), list):
            raise ValueError(f'{path}: not a valid item catalog: expected {{"items": [...]}}')
        records = content["items"]
        for position, record in enumerate(records):
            if not isinstance(record, dict) or not {"index", "item_id", "text"} <= set(record):
                raise ValueError(f"{path}: record {position} must be an object with index, item_id and text")
            if record["index"] != position:
                raise ValueError(f"{path}: record {position} has index {record['index']!r}, expected {position}")
            if not isinstance(record["item_id"], str):
                raise ValueError(f"{path}: record {position} has item_id {record['item_id']!r}; expected a string")
        try:
            return cls([record["item_id"] for record in records], [record["text"] for record in records])
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None


def check_catalog_binding(config, catalog: ItemCatalog, source: str) -> None:
    """Refuse a catalog whose ids (in order) differ from those an ``IAMConfig`` records (``catalog_fingerprint``)."""
    if config.catalog_fingerprint is None or config.catalog_fingerprint == catalog.fingerprint:
        return
    raise ValueError(
        f"{source} does not match this model's catalog: config.catalog_fingerprint is "
        f"{config.catalog_fingerprint[:12]}..., the catalog's item ids in order give {catalog.fingerprint[:12]}... "
        f"({len(catalog)} items). Each adapter row scores one item of the training catalog, in its order: a file "
        "from another model, or the same items reordered, would put every score on the wrong item."
    )


def checkpoint_catalog(pretrained_model_name_or_path, config, **kwargs) -> ItemCatalog | None:
    """The catalog saved with a checkpoint (a folder or a Hub repo), read and checked against its config before any
    weight is loaded: a corrupt file, another size or another order of ids is refused with the file's name. ``None``
    when the checkpoint has no catalog file (a loud warning if its config records one). ``kwargs``: the Hub arguments
    of ``from_pretrained`` (others are ignored)."""
    catalog_file = optional_checkpoint_file(pretrained_model_name_or_path, CATALOG_FILE_NAME, **hub_arguments(kwargs))
    if catalog_file is None:
        if config.catalog_fingerprint is not None:
            logger.warning(
                f"{pretrained_model_name_or_path}: config.json records a catalog (catalog_fingerprint) but "
                f"{CATALOG_FILE_NAME} is missing: scores come by catalog index only, with no item ids. Attach "
                "the training catalog with model.set_catalog(catalog)."
            )
        return None
    catalog = ItemCatalog.load(catalog_file)  # a corrupt file is named here, before any weight
    if len(catalog) != config.num_items:
        raise ValueError(
            f"{catalog_file}: the catalog has {len(catalog)} items but this model scores "
            f"{config.num_items} (config.num_items): the file belongs to another model"
        )
    check_catalog_binding(config, catalog, catalog_file)
    return catalog


def item_token_sequences(renderer, catalog: ItemCatalog | None = None) -> list[list[int]]:
    """Item token sequences: given as such, or rendered in catalog order by a collator (any object with a ``catalog``
    and ``item_token_ids(catalog_index)``), which must render ``catalog`` (the model's) when one is given, so that
    what is built from them belongs to the model's items."""
    if isinstance(renderer, Sequence):
        sequences = [list(tokens) for tokens in renderer]
    else:
        if catalog is not None and renderer.catalog != catalog:
            raise ValueError("the renderer's catalog is not this model's catalog: its items would be other items")
        sequences = [renderer.item_token_ids(index) for index in range(len(renderer.catalog))]
    return sequences


def remove_stale_catalog(save_directory: str | os.PathLike) -> None:
    """Remove an older model's catalog file from a folder about to receive another model, so that a folder never
    pairs these weights with another model's catalog (docs/reliability.md)."""
    stale = os.path.join(save_directory, CATALOG_FILE_NAME)
    if os.path.isfile(stale):
        os.remove(stale)
