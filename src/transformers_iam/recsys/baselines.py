"""Non-LLM baselines scored with the same split and metric code as IAM, and the popularity a checkpoint carries."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..core.catalog import ItemCatalog
from ..core.loading import optional_checkpoint_file
from .data import LeaveOneOutData
from .metrics import DEFAULT_KS, metrics_from_ranks, target_ranks

# the most scores popularity ranks at once (users x catalog items)
POPULARITY_RANKING_SCORES = 1 << 24


def popularity_scores(sequences: dict[str, list[str]], catalog: ItemCatalog) -> torch.Tensor:
    """Interaction count of every catalog item in the given sequences."""
    counts = Counter(item for items in sequences.values() for item in items)
    return torch.tensor([float(counts.get(item_id, 0)) for item_id in catalog.item_ids])


def popularity_ranks(data: LeaveOneOutData, split: str, exclude_history: bool, dataset=None) -> torch.Tensor:
    """Each user's rank of its target when the catalog is ranked by popularity, in the order of ``dataset``
    (default: the whole split; pass a subset of it to rank the same users as a model, or ``data.warm_valid``).

    Popularity counts :meth:`LeaveOneOutData.popularity_sequences`: for ``valid`` every training sequence, for
    ``test`` the training sequences plus the validation items; under the cold-item protocol only what the models
    trained on (the training sequences without cold items) for both, so every cold item counts 0. With
    ``exclude_history`` each row's own history (what a model excludes for that row) leaves the ranking. Ranked
    ``POPULARITY_RANKING_SCORES // items`` users at a time.
    """
    scores = popularity_scores(data.popularity_sequences(split), data.catalog)
    dataset = data.split(split) if dataset is None else dataset
    targets = torch.tensor(data.catalog.indices_of(dataset["target"]))
    histories = [data.catalog.indices_of(history) for history in dataset["history"]] if exclude_history else None
    users = max(1, POPULARITY_RANKING_SCORES // len(data.catalog))  # a chunk of users: no [users x items] matrix
    chunks = [
        target_ranks(
            scores.expand(len(targets[start : start + users]), -1),
            targets[start : start + users],
            None if histories is None else histories[start : start + users],
        )
        for start in range(0, len(targets), users)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)


def evaluate_popularity(
    data: LeaveOneOutData, split: str, exclude_history: bool, ks=DEFAULT_KS, dataset=None, return_ranks: bool = False
) -> dict[str, float] | tuple[dict[str, float], dict[str, int]]:
    """Popularity's metrics on a split (or on ``dataset``, a subset of it), from :func:`popularity_ranks`; with
    ``return_ranks`` also ``{user_id: rank}``, for paired comparisons (``recsys/paired.py``).

    Example:
        >>> metrics, ranks = evaluate_popularity(data, "test", True, return_ranks=True)
        >>> metrics["users"] == len(ranks) == len(data.test), ranks["u0"]
        (True, 3)
    """
    dataset = data.split(split) if dataset is None else dataset
    ranks = popularity_ranks(data, split, exclude_history, dataset)
    metrics = metrics_from_ranks(ranks, ks)
    if not return_ranks:
        return metrics
    return metrics, {str(user): rank for user, rank in zip(dataset["user_id"], ranks.tolist())}


POPULARITY_FILE = "item_popularity.json"


# -- the popularity a checkpoint carries (what the demo shows beside the model) ---------------------------------------
@dataclass
class ItemPopularity:
    """How often each catalog item occurs in the interactions a checkpoint was trained on, and what those were.

    ``counts[i]`` belongs to catalog index ``i``. ``description`` is shown in the page: "popularity" means nothing
    without saying whose interactions were counted.

    Example:
        >>> catalog = ItemCatalog(["a", "b", "c"], ["A (1990)", "B (1991)", "C (1992)"])
        >>> popularity = ItemPopularity.from_sequences({"u1": ["a", "b"], "u2": ["b"]}, catalog, "toy data")
        >>> popularity.top(2, exclude=set()), popularity.top(2, exclude={1})
        ([(1, 2), (0, 1)], [(0, 1), (2, 0)])
    """

    counts: torch.Tensor
    description: str

    @classmethod
    def from_sequences(
        cls, sequences: Mapping[str, Sequence[str]], catalog: ItemCatalog, description: str
    ) -> ItemPopularity:
        """Count every item of ``{user: [item ids]}`` (the same count as the popularity baseline,
        ``recsys.baselines.popularity_scores``)."""
        return cls(popularity_scores(dict(sequences), catalog), description)

    def top(self, k: int, exclude: set[int]) -> list[tuple[int, int]]:
        """The ``k`` most frequent catalog indices not in ``exclude``, as ``(index, count)``; ties go to the lower
        catalog index (a stable order, so the list does not shuffle between two identical requests)."""
        counts = self.counts.clone()
        if exclude:
            counts[sorted(exclude)] = float("-inf")
        order = torch.argsort(-counts, stable=True)[: min(k, len(counts) - len(exclude))]
        return [(int(index), int(self.counts[index])) for index in order.tolist()]


def save_item_popularity(
    directory: str | os.PathLike, sequences: Mapping[str, Sequence[str]], catalog: ItemCatalog, description: str
) -> str:
    """Write ``item_popularity.json`` (each item's count in ``sequences``, and what they are) beside a checkpoint.

    For a run's checkpoint, :func:`save_training_popularity` calls it with the interactions the model was trained on:
    the demo then shows that popularity for a checkpoint from the Hub too, where the run's data files are not at hand.

    Example:
        >>> catalog = ItemCatalog(["a", "b"], ["A (1990)", "B (1991)"])
        >>> _ = save_item_popularity(tmp, {"u1": ["a", "b", "b"]}, catalog, "toy data")
        >>> load_item_popularity(tmp, catalog).counts.tolist()
        [1.0, 2.0]
    """
    counts = popularity_scores(dict(sequences), catalog)
    path = os.path.join(directory, POPULARITY_FILE)
    content = {
        "description": description,
        "catalog_fingerprint": catalog.fingerprint,
        "counts": {item_id: int(count) for item_id, count in zip(catalog.item_ids, counts.tolist())},
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(content, handle, ensure_ascii=False, indent=0)
    return path


def save_training_popularity(directory: str | os.PathLike, data: LeaveOneOutData) -> str:
    """Write the popularity the demo shows for a run's checkpoint: each item's count in the training interactions
    (``data.visible_sequences("train")``: each user's sequence without its validation and test targets, and without
    cold items under the cold-item protocol).

    The main job writes it into every checkpoint (``experiments/run.py``); ``examples/demo.py`` computes the same
    counts from the run's data files when a checkpoint has no such file.
    """
    popularity = training_popularity(data)
    return save_item_popularity(directory, data.visible_sequences("train"), data.catalog, popularity.description)


def training_popularity(data: LeaveOneOutData) -> ItemPopularity:
    """Each item's count in a split's training interactions, described for the page (see
    :func:`save_training_popularity`)."""
    training = data.visible_sequences("train")  # each user's sequence without the validation and test targets
    interactions = sum(len(items) for items in training.values())
    name = data.statistics.get("name", "the data")
    description = (
        f"the number of times each item occurs in the training interactions of {name} that this checkpoint was "
        f"trained on ({interactions:,} interactions of {len(training):,} users; each user's "
        "last two, the validation and test targets, are not counted)"
    )
    return ItemPopularity.from_sequences(training, data.catalog, description)


def load_item_popularity(checkpoint: str | os.PathLike, catalog: ItemCatalog) -> ItemPopularity | None:
    """The ``item_popularity.json`` saved beside a checkpoint (a folder or a Hub id), or ``None`` when there is none.

    A file written for another catalog (its fingerprint differs) is refused: its counts would sit on other items.
    """
    path = optional_checkpoint_file(checkpoint, POPULARITY_FILE)
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        content = json.load(handle)
    if content.get("catalog_fingerprint") != catalog.fingerprint:
        raise ValueError(f"{path} was written for another catalog (its catalog_fingerprint differs from the model's)")
    counts = content["counts"]
    return ItemPopularity(
        torch.tensor([float(counts.get(item_id, 0)) for item_id in catalog.item_ids]), content["description"]
    )
