"""Where a user's history becomes tokens and item segment ids.

Every setting is checked by one function (:func:`check_collator_settings`), for the constructor and for
``iam_collator.json`` on load alike, against stated bounds: a settings file is data a checkpoint brings, and a hostile
or corrupt one must not make a request take seconds or exhaust memory (docs/reliability.md).
"""

from __future__ import annotations

import inspect
import json
import os
import string
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import cached_file

from .catalog import CATALOG_FILE_NAME, ItemCatalog
from .loading import optional_checkpoint_file

COLLATOR_FILE_NAME = "iam_collator.json"
_SETTINGS = (
    "max_length",
    "max_item_tokens",
    "max_history_items",
    "padding_side",
    "prompt",
    "query",
    "item_template",
    "every_item_targets",
)

DEFAULT_PROMPT = "A user watched these movies, oldest first:\n"
DEFAULT_QUERY = "The next movie the user will watch is:"

# The bounds on the settings. A prompt is at most MAX_LENGTH tokens (or the tokenizer's model_max_length, when it
# states a smaller one): 32k tokens is beyond any context this project trains at (1,400 at most) and is still one
# forward a CPU finishes, where 10**9 would allocate the padded batch before anything else could refuse it.
MAX_LENGTH = 32768
# every rendered item takes at least one token, so a cap above MAX_LENGTH could never bind
MAX_HISTORY_ITEMS = MAX_LENGTH
# prompt and query, each: about 4 characters a token in English text, so a whole MAX_LENGTH prompt; tokenizing is
# linear in the text, and a megabyte prompt would be tokenized before its token count could be checked
MAX_PROMPT_CHARS = 4 * MAX_LENGTH
# the item template is rendered and tokenized once per catalog item, and an item keeps only max_item_tokens tokens
MAX_ITEM_TEMPLATE_CHARS = 1024
# read at most this much of iam_collator.json before parsing it: the longest valid settings (prompt and query at
# MAX_PROMPT_CHARS, every character \u-escaped: at most 12 bytes) fit in 3.2 MB
MAX_SETTINGS_FILE_BYTES = 4 * 1024 * 1024


def _shown(value: Any) -> str:
    """A value's repr for an error message, cut short: the value may be a megabyte string from a settings file."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _length_bound(tokenizer: PreTrainedTokenizerBase | None) -> tuple[int, str]:
    """The largest max_length allowed and where that bound comes from."""
    # transformers sets model_max_length to a 1e30 sentinel when the tokenizer states none (SmolLM2's GGUF tokenizer)
    stated = getattr(tokenizer, "model_max_length", None)
    if isinstance(stated, int) and not isinstance(stated, bool) and 0 < stated < MAX_LENGTH:
        return stated, "the tokenizer's model_max_length"
    return MAX_LENGTH, "collator.MAX_LENGTH"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_collator_settings(
    settings: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None = None, source: str | None = None
) -> None:
    """Refuse a collator setting that is of the wrong type, out of its range or over its stated bound
    (``MAX_LENGTH``, ``MAX_HISTORY_ITEMS``, ``MAX_PROMPT_CHARS``, ``MAX_ITEM_TEMPLATE_CHARS``); ``settings`` holds
    every name of the collator's settings. What the constructor and :meth:`IAMDataCollator.from_pretrained` both run,
    before anything is tokenized; ``source`` (the settings file) prefixes every message, which names the field.

    Example:
        >>> check_collator_settings({**collator_settings_defaults(), "max_length": 10**9}, source="iam_collator.json")
        Traceback (most recent call last):
        ...
        ValueError: iam_collator.json: max_length must be at most 32768 (collator.MAX_LENGTH), got 1000000000
    """
    where = f"{source}: " if source else ""
    unknown = sorted(set(settings) - set(_SETTINGS), key=str)
    if unknown:
        raise ValueError(
            f"{where}unknown collator settings {[str(name)[:60] for name in unknown]} (known: {_SETTINGS})"
        )
    missing = [name for name in _SETTINGS if name not in settings]
    if missing:  # a caller error: the constructor and from_pretrained fill in every default
        raise ValueError(f"{where}missing collator settings {missing}")
    if settings["padding_side"] not in ("left", "right"):
        raise ValueError(f"{where}padding_side must be 'left' or 'right', got {_shown(settings['padding_side'])}")
    max_length = settings["max_length"]
    if not _is_count(max_length):
        raise ValueError(f"{where}max_length must be an int >= 1, got {_shown(max_length)}")
    bound, why = _length_bound(tokenizer)
    if max_length > bound:
        raise ValueError(f"{where}max_length must be at most {bound} ({why}), got {_shown(max_length)}")
    max_item_tokens = settings["max_item_tokens"]
    if not _is_count(max_item_tokens):
        raise ValueError(f"{where}max_item_tokens must be an int >= 1, got {_shown(max_item_tokens)}")
    if max_item_tokens > max_length:
        raise ValueError(
            f"{where}max_item_tokens must be at most max_length ({max_length}), got {_shown(max_item_tokens)}"
        )
    max_history_items = settings["max_history_items"]
    if max_history_items is not None and not _is_count(max_history_items):
        raise ValueError(f"{where}max_history_items must be None or an int >= 1, got {_shown(max_history_items)}")
    if max_history_items is not None and max_history_items > MAX_HISTORY_ITEMS:
        raise ValueError(
            f"{where}max_history_items must be at most {MAX_HISTORY_ITEMS} (collator.MAX_HISTORY_ITEMS), got "
            f"{_shown(max_history_items)}"
        )
    for name in ("prompt", "query"):
        text = settings[name]
        if not isinstance(text, str):
            raise ValueError(f"{where}{name} must be a string, got {type(text).__name__} {_shown(text)}")
        if len(text) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"{where}{name} must be at most {MAX_PROMPT_CHARS} characters (collator.MAX_PROMPT_CHARS), got "
                f"{len(text)}"
            )
    _check_item_template(settings["item_template"], where)
    if not isinstance(settings["every_item_targets"], bool):
        # a JSON "false" (a string) would read as True
        raise ValueError(
            f"{where}every_item_targets must be True or False, got {_shown(settings['every_item_targets'])}"
        )


def _check_item_template(template: Any, where: str) -> None:
    """``template`` names ``{text}`` and no other field, without a conversion or format spec: checked by parsing it,
    never by formatting it (``{text:>999999999}`` would allocate a gigabyte per item, the check included)."""
    if not isinstance(template, str):
        raise ValueError(f"{where}item_template must be a string, got {type(template).__name__} {_shown(template)}")
    if len(template) > MAX_ITEM_TEMPLATE_CHARS:
        raise ValueError(
            f"{where}item_template must be at most {MAX_ITEM_TEMPLATE_CHARS} characters "
            f"(collator.MAX_ITEM_TEMPLATE_CHARS), got {len(template)}"
        )
    try:
        fields = [part[1:] for part in string.Formatter().parse(template) if part[1] is not None]
    except ValueError as error:  # "{text" or a lone "}"
        raise ValueError(
            f"{where}item_template must be a format string with only {{text}}, got {_shown(template)} ({error})"
        ) from None
    for name, format_spec, conversion in fields:
        if name != "text":  # "{title}", "{}", "{0}", "{text.upper}", "{text[0]}"
            raise ValueError(
                f"{where}item_template must be a format string with only {{text}}, got {_shown(template)} (field "
                f"{{{name}}})"
            )
        if format_spec or conversion:
            raise ValueError(
                f"{where}item_template must use {{text}} as it is, without a conversion or format spec, got "
                f"{_shown(template)} (max_item_tokens is what caps an item)"
            )
    if not fields:  # every item would render as the same text
        raise ValueError(f"{where}item_template must contain {{text}}, got {_shown(template)}")


def collator_settings_defaults() -> dict[str, Any]:
    """The constructor's default for each setting: what a settings file that leaves one out gets."""
    parameters = inspect.signature(IAMDataCollator.__init__).parameters
    return {name: parameters[name].default for name in _SETTINGS}


def read_collator_settings(path: str) -> dict[str, Any]:
    """The settings in a collator file, as saved, after checking that the file is a JSON object (of at most
    ``MAX_SETTINGS_FILE_BYTES``) of known settings; errors name the file (and line:column for broken JSON)."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_SETTINGS_FILE_BYTES + 1)  # never more: a huge file is refused before it is read
    if len(data) > MAX_SETTINGS_FILE_BYTES:
        raise ValueError(
            f"{path}: more than {MAX_SETTINGS_FILE_BYTES} bytes (collator.MAX_SETTINGS_FILE_BYTES); a collator "
            "settings file is a few hundred bytes"
        )
    try:
        settings = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from None
    except (ValueError, RecursionError) as error:  # a 5000-digit number, arrays nested 100000 deep
        raise ValueError(f"{path}: not a valid collator settings file ({type(error).__name__}: {error})") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected a JSON object of collator settings, got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise ValueError(
            f"{path}: unknown collator settings {[name[:60] for name in unknown]} (a collator file holds "
            f"{list(_SETTINGS)})"
        )
    return settings


def _context_token_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: str, query: str, max_length: int, max_item_tokens: int, source: str = ""
) -> tuple[list[int], list[int]]:
    """The prompt's tokens (after the BOS token, when the tokenizer has one) and the query's, checked to leave room
    for at least one item in ``max_length``; ``source`` (a settings file) prefixes the messages."""
    where = f"{source}: " if source else ""
    prefix = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    prompt_ids = prefix + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    query_ids = tokenizer(query, add_special_tokens=False)["input_ids"]
    if not query_ids:
        raise ValueError(f"{where}query must tokenize to at least one token: its last token is what the adapter reads")
    budget = max_length - len(prompt_ids) - len(query_ids)
    if budget < max_item_tokens:
        raise ValueError(
            f"{where}max_length={max_length} leaves {budget} tokens for items after the prompt and query "
            f"({len(prompt_ids) + len(query_ids)} tokens): less than one item (max_item_tokens={max_item_tokens})"
        )
    return prompt_ids, query_ids


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
        self.prompt_ids, self.query_ids = _context_token_ids(tokenizer, prompt, query, max_length, max_item_tokens)
        self._item_ids_cache: dict[int, list[int]] = {}

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Save the prompt settings (and the tokenizer) so a checkpoint renders histories as in training."""
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, COLLATOR_FILE_NAME), "w", encoding="utf-8") as handle:
            json.dump({name: getattr(self, name) for name in _SETTINGS}, handle, indent=1, ensure_ascii=False)
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
        unknown = sorted(set(overrides) - set(_SETTINGS))
        if unknown:  # what the constructor would say, before a tokenizer is loaded for nothing
            raise TypeError(f"from_pretrained got unknown collator settings {unknown} (known: {_SETTINGS})")
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
            _context_token_ids(
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
