"""The collator's settings: their names, the bounds they are held to, the one check they pass and the settings file.

Every setting is checked by one function (:func:`check_collator_settings`), for the constructor of
:class:`~transformers_iam.core.collator.IAMDataCollator` and for ``iam_collator.json`` on load alike
(:func:`read_collator_settings` reads the file), against stated bounds (``MAX_*``): a settings file is data a
checkpoint brings, and a hostile or corrupt one must not make a request take seconds or exhaust memory
(docs/reliability.md). :func:`context_token_ids` tokenizes the prompt and query and checks that they leave room for
an item.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from typing import Any

from transformers import PreTrainedTokenizerBase

COLLATOR_FILE_NAME = "iam_collator.json"
SETTING_NAMES = (
    "max_length",
    "max_item_tokens",
    "max_history_items",
    "padding_side",
    "prompt",
    "query",
    "item_template",
    "every_item_targets",
)

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
        >>> from transformers_iam.core.collator import collator_settings_defaults
        >>> check_collator_settings({**collator_settings_defaults(), "max_length": 10**9}, source="iam_collator.json")
        Traceback (most recent call last):
        ...
        ValueError: iam_collator.json: max_length must be at most 32768 (collator.MAX_LENGTH), got 1000000000
    """
    where = f"{source}: " if source else ""
    unknown = sorted(set(settings) - set(SETTING_NAMES), key=str)
    if unknown:
        raise ValueError(
            f"{where}unknown collator settings {[str(name)[:60] for name in unknown]} (known: {SETTING_NAMES})"
        )
    missing = [name for name in SETTING_NAMES if name not in settings]
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
    _check_prompt_and_query(settings, where)
    _check_item_template(settings["item_template"], where)
    if not isinstance(settings["every_item_targets"], bool):
        # a JSON "false" (a string) would read as True
        raise ValueError(
            f"{where}every_item_targets must be True or False, got {_shown(settings['every_item_targets'])}"
        )


def _check_text_setting(name: str, text: Any, limit: int, limit_name: str, where: str) -> None:
    """A text setting: a string of at most ``limit`` characters (``limit_name``, the constant that states it)."""
    if not isinstance(text, str):
        raise ValueError(f"{where}{name} must be a string, got {type(text).__name__} {_shown(text)}")
    if len(text) > limit:
        raise ValueError(f"{where}{name} must be at most {limit} characters (collator.{limit_name}), got {len(text)}")


def _check_prompt_and_query(settings: Mapping[str, Any], where: str) -> None:
    """``prompt`` and ``query``, each a string of at most ``MAX_PROMPT_CHARS`` characters."""
    for name in ("prompt", "query"):
        _check_text_setting(name, settings[name], MAX_PROMPT_CHARS, "MAX_PROMPT_CHARS", where)


def _check_item_template(template: Any, where: str) -> None:
    """``template`` names ``{text}`` and no other field, without a conversion or format spec: checked by parsing it,
    never by formatting it (``{text:>999999999}`` would allocate a gigabyte per item, the check included)."""
    _check_text_setting("item_template", template, MAX_ITEM_TEMPLATE_CHARS, "MAX_ITEM_TEMPLATE_CHARS", where)
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
    unknown = sorted(set(settings) - set(SETTING_NAMES))
    if unknown:
        raise ValueError(
            f"{path}: unknown collator settings {[name[:60] for name in unknown]} (a collator file holds "
            f"{list(SETTING_NAMES)})"
        )
    return settings


def context_token_ids(
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


__all__ = [
    "COLLATOR_FILE_NAME",
    "MAX_HISTORY_ITEMS",
    "MAX_ITEM_TEMPLATE_CHARS",
    "MAX_LENGTH",
    "MAX_PROMPT_CHARS",
    "MAX_SETTINGS_FILE_BYTES",
    "SETTING_NAMES",
    "check_collator_settings",
    "context_token_ids",
    "read_collator_settings",
]
