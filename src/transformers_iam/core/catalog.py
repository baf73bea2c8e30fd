"""The item catalog: item ids, their catalog indices (the adapter's output order) and texts."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence

CATALOG_FILE_NAME = "item_catalog.json"


class ItemCatalog:
    """An ordered catalog. Catalog index ``i`` is the adapter's ``i``-th score.

    Item ids are kept as strings (``5`` and ``"5"`` name the same item), since data files
    store them as text.

    Example:
        >>> catalog = ItemCatalog(["1", "2"], ["Toy Story (1995)", "GoldenEye (1995)"])
        >>> catalog.index_of(2), catalog.text_of("1"), len(catalog)
        (1, 'Toy Story (1995)', 2)
    """

    def __init__(self, item_ids: Sequence, texts: Sequence[str]):
        if len(item_ids) != len(texts):
            raise ValueError(f"ItemCatalog got {len(item_ids)} item ids but {len(texts)} texts")
        if not item_ids:
            raise ValueError("ItemCatalog needs at least one item")
        self.item_ids = [str(item_id) for item_id in item_ids]
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
        path = os.path.join(directory, CATALOG_FILE_NAME)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"items": self.to_records()}, handle, ensure_ascii=False, indent=0)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ItemCatalog:
        """Load from a checkpoint folder or an ``item_catalog.json`` file."""
        if os.path.isdir(path):
            path = os.path.join(path, CATALOG_FILE_NAME)
        with open(path, encoding="utf-8") as handle:
            records = json.load(handle)["items"]
        for position, record in enumerate(records):
            if record.get("index") != position:
                raise ValueError(f"{path}: record {position} has index {record.get('index')!r}, expected {position}")
        return cls([record["item_id"] for record in records], [record["text"] for record in records])
