"""Where a user's history becomes tokens and item segment ids: :class:`IAMDataCollator`.

Its settings are checked by :func:`check_collator_settings` (in :mod:`.collator_settings`, with their stated bounds,
``MAX_*``), for the constructor and for ``iam_collator.json`` on load alike: a settings file is data a checkpoint
brings, and a hostile or corrupt one must not make a request take seconds or exhaust memory (docs/reliability.md).
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import cached_file

from .catalog import CATALOG_FILE_NAME, ItemCatalog
from .collator_settings import (
    COLLATOR_FILE_NAME,
    MAX_HISTORY_ITEMS,
    MAX_ITEM_TEMPLATE_CHARS,
    MAX_LENGTH,
    MAX_PROMPT_CHARS,
    MAX_SETTINGS_FILE_BYTES,
    SETTING_NAMES,
    check_collator_settings,
    context_token_ids,
    read_collator_settings,
)
from .loading import optional_checkpoint_file

DEFAULT_PROMPT = "A user watched these movies, oldest first:\n"
DEFAULT_QUERY = "The next movie the user will watch is:"


def collator_settings_defaults() -> dict[str, Any]:
    """The constructor's default for each setting: what a settings file that leaves one out gets."""
    parameters = inspect.signature(IAMDataCollator.__init__).parameters
    return {name: parameters[name].default for name in SETTING_NAMES}


class IAMDataCollator:
    """Renders histories as item-segmented prompts for [`IAMForCausalRecommendation`].

    Each example is ``{"history": [item ids, oldest first], "target": item id}`` (``target``
    optional, for inference). The prompt is ``prompt`` (segment 0), then every history item
    as its own span (segments 1..n, oldest first), then ``query`` (segment 0), whose last
    token the adapter reads.

    Each item's text is tokenized on its own, so no token straddles two items and an item's
    tokens are the same wherever it appears; it is capped at ``max_item_tokens``. Histories
    longer than ``max_history_items`` or than ``max_length`` tokens lose their oldest whole
    items, never part of one.

    Emits ``input_ids``, ``attention_mask``, ``item_segment_ids``, ``labels`` (catalog index
    of the target; with ``every_item_targets``, ``(batch, items)``: after each kept item the next one,
    after the last the target, ``-100`` padding), ``segment_item_indices`` (the catalog index of the
    item in segment ``j + 1``, ``-1`` pads: what item id embeddings read) and ``history_item_indices``:
    the catalog indices of *every* history item, including those the prompt had no room for (``-1``
    pads), so that excluding the history from a ranking excludes all of it.

    Example:
        >>> collator = IAMDataCollator(tokenizer, catalog, max_length=256, prompt="user history :", query="next ?")
        >>> batch = collator([{"history": ["i1", "i2"], "target": "i3"}])
        >>> tokenizer.decode(batch["input_ids"][0])
        '<s> user history : w1_0 w1_1 w2_0 w2_1 w2_2 next ?'
        >>> batch["item_segment_ids"][0].tolist(), batch["labels"].tolist(), batch["history_item_indices"].tolist()
        ([0, 0, 0, 0, 1, 1, 2, 2, 2, 0, 0], [3], [[1, 2]])
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        catalog: ItemCatalog,
        max_length: int = 512,
        max_item_tokens: int = 32,
        max_history_items: int | None = None,
        padding_side: str = "left",
        prompt: str = DEFAULT_PROMPT,
        query: str = DEFAULT_QUERY,
        item_template: str = "{text}\n",
        every_item_targets: bool = False,
    ):
        check_collator_settings(
            {
                "max_length": max_length,
                "max_item_tokens": max_item_tokens,
                "max_history_items": max_history_items,
                "padding_side": padding_side,
                "prompt": prompt,
                "query": query,
                "item_template": item_template,
                "every_item_targets": every_item_targets,
            },
            tokenizer,
        )
        self.tokenizer = tokenizer
        self.catalog = catalog
        self.max_length = max_length
        self.max_item_tokens = max_item_tokens
        self.max_history_items = max_history_items
        self.padding_side = padding_side
        self.item_template = item_template
        self.prompt, self.query = prompt, query
        self.every_item_targets = every_item_targets
        pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_token_id is None:
            raise ValueError("The tokenizer has neither a pad_token_id nor an eos_token_id to pad with")
        self.pad_token_id = pad_token_id
        self.prompt_ids, self.query_ids = context_token_ids(tokenizer, prompt, query, max_length, max_item_tokens)
        self._item_ids_cache: dict[int, list[int]] = {}

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Save the prompt settings (and the tokenizer) so a checkpoint renders histories as in training."""
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, COLLATOR_FILE_NAME), "w", encoding="utf-8") as handle:
            json.dump({name: getattr(self, name) for name in SETTING_NAMES}, handle, indent=1, ensure_ascii=False)
        self.tokenizer.save_pretrained(save_directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, catalog: ItemCatalog | None = None, tokenizer=None, **overrides
    ) -> IAMDataCollator:
        """The collator saved in a checkpoint (a folder or a hub id; its catalog and tokenizer too, unless given).

        ``iam_collator.json`` is checked as the constructor checks its arguments (:func:`check_collator_settings`)
        before anything is built from it, each error naming the file and the field; an unknown key is refused, a
        setting it leaves out takes the constructor's default, and ``overrides`` replace the saved values.

        Example:
            >>> IAMDataCollator.from_pretrained(checkpoint, max_history_items=5).max_history_items
            5
        """
        unknown = sorted(set(overrides) - set(SETTING_NAMES))
        if unknown:  # what the constructor would say, before a tokenizer is loaded for nothing
            raise TypeError(f"from_pretrained got unknown collator settings {unknown} (known: {SETTING_NAMES})")
        path = optional_checkpoint_file(directory, COLLATOR_FILE_NAME)
        settings = read_collator_settings(path) if path is not None else {}
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(directory)
        if catalog is None:
            catalog_file = cached_file(directory, CATALOG_FILE_NAME)
            catalog = ItemCatalog.load(catalog_file)
        if path is not None:  # the constructor checks the same, but could not say which file the values came from
            source = path + (f" (with overrides {sorted(overrides)})" if overrides else "")
            values = {**collator_settings_defaults(), **settings, **overrides}
            check_collator_settings(values, tokenizer, source)
            context_token_ids(
                tokenizer, values["prompt"], values["query"], values["max_length"], values["max_item_tokens"], source
            )
        return cls(tokenizer, catalog, **{**settings, **overrides})

    def extend_catalog(self, catalog: ItemCatalog) -> None:
        """Render from ``catalog`` from now on: the current catalog followed by new items (same ids, same order
        first), as after ``IAMForCausalRecommendation.add_items``. Token ids already rendered stay valid."""
        if catalog.item_ids[: len(self.catalog)] != self.catalog.item_ids or catalog.texts[: len(self.catalog)] != (
            self.catalog.texts
        ):
            raise ValueError(
                "the new catalog must start with the collator's catalog (same ids and texts, same order): extending "
                "renders new items after the old ones, it cannot reorder them"
            )
        # tokens kept for indices past the current catalog belong to an extension that failed (add_items restores the
        # catalog, not this cache): the new catalog's items there may be others
        for index in [index for index in self._item_ids_cache if index >= len(self.catalog)]:
            del self._item_ids_cache[index]
        self.catalog = catalog

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def item_token_ids(self, catalog_index: int) -> list[int]:
        """The tokens of one item, identical wherever it appears in a prompt."""
        if catalog_index not in self._item_ids_cache:
            text = self.item_template.format(text=self.catalog.texts[catalog_index])
            token_ids = self._encode(text)[: self.max_item_tokens]
            if not token_ids:  # an item with no tokens has no span: its segment id would silently vanish
                raise ValueError(
                    f"item {self.catalog.item_ids[catalog_index]!r} (catalog index {catalog_index}) tokenizes to no "
                    f"tokens (rendered text {text!r}); every item needs at least one token"
                )
            self._item_ids_cache[catalog_index] = token_ids
        return self._item_ids_cache[catalog_index]

    def _catalog_index(self, item_id, example_index: int, example: dict, field: str) -> int:
        if item_id not in self.catalog:
            user = f" (user {example['user_id']})" if "user_id" in example else ""
            raise ValueError(
                f"example {example_index}{user}: {field} item {item_id!r} is not in the catalog "
                f"({len(self.catalog)} items)"
            )
        return self.catalog.index_of(item_id)

    def render(self, example: dict, example_index: int = 0) -> RenderedExample:
        """Token ids, segment ids, the whole history's catalog indices and those of the items kept in the prompt."""
        if not isinstance(example, dict):
            raise ValueError(
                f'example {example_index} must be a dict {{"history": [...], "target": ...}}, got {example!r}'
            )
        user = f" (user {example['user_id']})" if "user_id" in example else ""
        history = example.get("history")
        if isinstance(history, (str, bytes)) or (history is not None and not isinstance(history, Sequence)):
            # a string would be read one character per item
            raise ValueError(f"example {example_index}{user}: history must be a list of item ids, got {history!r}")
        if history is None or len(history) == 0:
            raise ValueError(f"example {example_index}{user}: the history is empty; IAM needs at least one item")
        all_indices = [self._catalog_index(item, example_index, example, "history") for item in history]
        indices = all_indices[-self.max_history_items :] if self.max_history_items is not None else all_indices
        budget = self.max_length - len(self.prompt_ids) - len(self.query_ids)
        kept: list[int] = []
        for index in reversed(indices):  # newest first, so the oldest are the ones dropped
            cost = len(self.item_token_ids(index))
            if cost > budget:
                break
            kept.append(index)
            budget -= cost
        kept.reverse()
        input_ids, segment_ids = list(self.prompt_ids), [0] * len(self.prompt_ids)
        for segment, index in enumerate(kept, start=1):
            tokens = self.item_token_ids(index)
            input_ids += tokens
            segment_ids += [segment] * len(tokens)
        input_ids += self.query_ids
        segment_ids += [0] * len(self.query_ids)
        return RenderedExample(input_ids, segment_ids, all_indices, kept)

    def pad(self, fields: dict[str, tuple[list[list[int]], int]], side: str | None = None) -> dict[str, torch.Tensor]:
        """Pad each field's rows (with that field's pad value) to the longest row, on ``side`` (default: the
        collator's padding side)."""
        side = side or self.padding_side
        tensors = {}
        for name, (rows, value) in fields.items():
            width = max(len(row) for row in rows)
            fills = [[value] * (width - len(row)) for row in rows]
            padded = [fill + row if side == "left" else row + fill for row, fill in zip(rows, fills)]
            tensors[name] = torch.tensor(padded, dtype=torch.long)
        return tensors

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        rendered = [self.render(example, position) for position, example in enumerate(examples)]
        has_target = ["target" in example and example["target"] is not None for example in examples]
        if any(has_target) and not all(has_target):
            missing = has_target.index(False)
            raise ValueError(f"example {missing} has no target while others in the batch do")
        tensors = self.pad(
            {
                "input_ids": ([r.input_ids for r in rendered], self.pad_token_id),
                "attention_mask": ([[1] * len(r.input_ids) for r in rendered], 0),
                "item_segment_ids": ([r.segment_ids for r in rendered], 0),
            }
        )
        # exclusion lists, the items of the segments and per-item targets pad on the right, whatever the token side
        tensors.update(
            self.pad(
                {
                    "history_item_indices": ([r.history_indices for r in rendered], -1),
                    "segment_item_indices": ([r.kept_indices for r in rendered], -1),
                },
                side="right",
            )
        )
        if all(has_target):
            targets = [
                self._catalog_index(example["target"], position, example, "target")
                for position, example in enumerate(examples)
            ]
            if self.every_item_targets:
                # the state after kept item j predicts kept item j + 1; after the last one, the target
                rows = [r.kept_indices[1:] + [target] for r, target in zip(rendered, targets)]
                tensors.update(self.pad({"labels": (rows, -100)}, side="right"))
            else:
                tensors["labels"] = torch.tensor(targets, dtype=torch.long)
        return tensors


class RenderedExample(NamedTuple):
    """One example as the collator renders it."""

    input_ids: list[int]
    segment_ids: list[int]
    history_indices: list[int]  # catalog indices of the whole history (for exclusion)
    kept_indices: list[int]  # catalog indices of the items the prompt holds, oldest first (segments 1..n)


__all__ = [
    "COLLATOR_FILE_NAME",
    "DEFAULT_PROMPT",
    "DEFAULT_QUERY",
    "MAX_HISTORY_ITEMS",
    "MAX_ITEM_TEMPLATE_CHARS",
    "MAX_LENGTH",
    "MAX_PROMPT_CHARS",
    "MAX_SETTINGS_FILE_BYTES",
    "IAMDataCollator",
    "RenderedExample",
    "check_collator_settings",
    "collator_settings_defaults",
    "read_collator_settings",
]
