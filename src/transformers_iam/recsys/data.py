"""What a split gives: :class:`LeaveOneOutData` (the examples of each split, as HF datasets, and the catalog), the
interactions it is made from, and the error a malformed data file raises (``split.py`` makes the split,
``readers.py`` reads the files)."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

from datasets import Dataset, Features, List, Value

from ..core.catalog import ItemCatalog

# the columns of every split
EXAMPLE_FEATURES = Features({"user_id": Value("string"), "history": List(Value("string")), "target": Value("string")})


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a reader builds millions of small lists and objects.

    None of them form reference cycles, but the collector runs every few hundred allocations and walks the survivors
    again and again: on MovieLens-1M (1M interactions) that was most of the reading time. Nesting is safe: only the
    outermost pause turns it back on.

    Example:
        >>> with gc_paused():
        ...     rows = [[str(i)] for i in range(10)]
        >>> import gc; gc.isenabled()
        True
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class Interaction:
    user_id: str
    item_id: str
    timestamp: float
    source: str  # "file:line", for error messages


@dataclass
class LeaveOneOutData:
    """A leave-one-out split: HF datasets of ``{"user_id", "history", "target"}`` and the catalog.

    ``train`` holds training examples (prefixes of each user's training sequence, histories
    capped at ``max_history``), ``valid`` one example per user (history = the whole training
    sequence), ``test`` one per user (history = training sequence + validation item).
    ``sequences`` keeps every user's full time-ordered sequence.

    Under the cold-item protocol ``cold_items`` lists the cold items (catalog order; empty otherwise): ``train`` was
    built from each training sequence without them, ``valid`` and ``test`` are unchanged, and ``warm_valid`` is the
    validation view a model that has never seen a cold item is selected on during training: the users whose
    validation target is warm, cold items removed from their histories (users left with an empty history dropped;
    ``statistics["cold_items"]`` counts both). Without cold items ``warm_valid`` is ``valid``.

    Example:
        >>> from transformers_iam.recsys.split import leave_one_out
        >>> catalog = ItemCatalog(["a", "b", "c", "d"], ["A", "B", "C", "D"])
        >>> rows = [Interaction("u", item, t, f"row {t}") for t, item in enumerate("abcdab")]
        >>> data = leave_one_out(rows, catalog, cold_items=0.25, seed=2)
        >>> data.cold_items, data.warm_catalog.item_ids
        (('c',), ['a', 'b', 'd'])
        >>> data.visible_sequences("train")["u"], data.valid[0]["history"], data.test[0]["target"]
        (['a', 'b', 'd'], ['a', 'b', 'c', 'd'], 'b')
        >>> data.training_counts()["c"], data.training_counts()["a"]
        (0, 1)
    """

    catalog: ItemCatalog
    train: Dataset
    valid: Dataset
    test: Dataset
    sequences: dict[str, list[str]]
    statistics: dict = field(default_factory=dict)
    cold_items: tuple[str, ...] = ()
    warm_valid: Dataset | None = None  # None: ``valid`` (no cold items)

    def __post_init__(self) -> None:
        self.cold_items = tuple(self.cold_items)
        if self.warm_valid is None:
            self.warm_valid = self.valid

    @cached_property
    def warm_catalog(self) -> ItemCatalog:
        """The catalog without the cold items, in catalog order: the items a model may score while it trains (the
        catalog itself when no item is cold)."""
        if not self.cold_items:
            return self.catalog
        cold = set(self.cold_items)
        kept = [index for index, item_id in enumerate(self.catalog.item_ids) if item_id not in cold]
        return ItemCatalog(self.catalog.ids_of(kept), [self.catalog.texts[index] for index in kept])

    @cached_property
    def catalog_after_training(self) -> ItemCatalog:
        """The catalog of a trained model of this split: the warm catalog, then the cold items as the model adds
        them after training (``add_items`` appends them in catalog order); the catalog itself when no item is cold."""
        if not self.cold_items:
            return self.catalog
        warm = self.warm_catalog
        cold = list(self.cold_items)
        return ItemCatalog(warm.item_ids + cold, warm.texts + [self.catalog.text_of(item) for item in cold])

    def visible_sequences(self, split: str) -> dict[str, list[str]]:
        """Each user's interactions known before the split's targets: ``valid`` sees the training sequence,
        ``test`` sees it plus the validation item (the histories of those rows). ``train`` is what training sees:
        the training sequence, without cold items under the cold-item protocol."""
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
        if split == "train" and self.cold_items:
            cold = set(self.cold_items)
            return {user: [item for item in items[:-2] if item not in cold] for user, items in self.sequences.items()}
        cut = -1 if split == "test" else -2
        return {user: items[:cut] for user, items in self.sequences.items()}

    def popularity_sequences(self, split: str) -> dict[str, list[str]]:
        """The interactions popularity counts to rank a split's targets: those visible before them (``valid``: the
        training sequences; ``test``: plus each user's validation item). Under the cold-item protocol, only what the
        models trained on, for both splits (the training sequences without cold items), so that every cold item
        counts 0 and popularity knows nothing the models could not."""
        return self.visible_sequences("train" if self.cold_items else split)

    def training_counts(self) -> Counter[str]:
        """How often each item occurs in what training sees (:meth:`visible_sequences` ``"train"``); an item absent
        from it, a cold item among them, counts 0. What the long-tail breakdown groups targets by
        (``recsys/breakdown.py``) and what a model's item prior starts from."""
        return Counter(item for items in self.visible_sequences("train").values() for item in items)

    def split(self, name: str) -> Dataset:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]

    @property
    def cold_items_drawn(self) -> str:
        """How the cold items were chosen, in words (``""`` without cold items): a seeded share, or a text pattern."""
        cold = self.statistics.get("cold_items")
        if not cold:
            return ""
        if cold.get("pattern") is not None:
            return f"the items whose text matches {cold['pattern']!r}"
        return (
            f"{cold['share']:g} of the {self.statistics['items_with_interactions']} items with interactions, "
            f"seed {cold['seed']}"
        )

    def describe(self) -> str:
        stats = self.statistics
        text = (
            f"{stats['name']}: {stats['users']} users, {stats['items']} items in the catalog "
            f"({stats['items_with_interactions']} with interactions), {stats['interactions']} interactions; "
            f"history length min/median/mean/max {stats['history_min']}/{stats['history_median']}/"
            f"{stats['history_mean']:.1f}/{stats['history_max']}; {stats['timestamp_ties']} interactions share "
            f"their user's timestamp with another (file order kept); {stats.get('duplicate_interactions', 0)} exact "
            f"duplicate interactions (kept); {stats['dropped_users']} users dropped "
            f"(fewer than 3 interactions); {len(self.train)} training examples"
        )
        cold = stats.get("cold_items")
        if cold:
            text += (
                f"; cold items: {cold['items']} ({self.cold_items_drawn}), "
                f"{cold['training_interactions_removed']} training interactions removed; validation during training "
                f"on {cold['warm_valid_users']} users "
                f"({cold['valid_users_with_cold_target']} with a cold target and "
                f"{cold['valid_users_with_only_cold_history']} with only cold items in their history left out); "
                f"{cold['test_users_with_cold_target']} test users have a cold target"
            )
        return text


class DataFormatError(ValueError):
    """A data file is missing a column or has a malformed row; the message names file, line and column."""


__all__ = ["DataFormatError", "EXAMPLE_FEATURES", "Interaction", "LeaveOneOutData", "gc_paused"]
