"""The demo's back end, without Gradio: a checkpoint loaded once, searched by title and asked for two top-10s.

:func:`load_recommender` loads a checkpoint (a folder or a Hub id) with its catalog, prompt settings and popularity,
and says what is missing when it cannot; :class:`DemoRecommender` finds items by typed text, resolves what a person
typed to one item, and answers a history with the model's top-k (from ``pipeline("item-recommendation")``) beside
popularity's; a visitor may add a new item (``model.add_items``, scored from its text) and see where it ranks. What
the page makes of these lists is ``demo_html.py``; the page itself is ``demo.py``.

Example:
    >>> recommender = load_recommender(checkpoint)  # a run's folder, e.g. runs/cpu-quick-stacked/checkpoint
    >>> [row.item_id for row in recommender.recommend(["i3"]).model][:3]
    ['i11', 'i7', 'i17']
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import AutoModel, pipeline

from ..core.catalog import ItemCatalog
from ..core.collator import IAMDataCollator
from ..core.pipeline_item_recommendation import TASK
from ..recsys.baselines import ItemPopularity, load_item_popularity
from ..recsys.metrics import target_ranks

DEFAULT_CHECKPOINT = "runs/cpu-quick-stacked/checkpoint"
TOP_K = 10
MAX_MATCHES = 20
# the page's catalog is shared by every visitor of one server, and each new item grows the model: both bounded
MAX_NEW_ITEMS = 50
MAX_NEW_ITEM_CHARS = 200
NEW_ITEM_PREFIX = "new:"
HOW_TO_MAKE_A_CHECKPOINT = (
    "`make run` trains the cpu-quick model on MovieLens-100k (about 4 minutes on 2 CPU cores) and writes "
    f"`{DEFAULT_CHECKPOINT}`; then `make demo`. Any other checkpoint: `make demo ARGS=path/or/hub-id`."
)


class DemoInputError(ValueError):
    """Input the page answers with a message (an unknown title, an empty history), never a traceback."""


@dataclass
class ShownItem:
    """One line of a list in the page."""

    rank: int
    index: int
    item_id: str
    text: str
    value: float  # the model's score, or the popularity count
    in_both: bool = False  # in the model's top-k and in popularity's


@dataclass
class ShownLists:
    """What one history shows: the model's top-k, popularity's top-k (or ``None``) and how long the model took."""

    model: list[ShownItem]
    popularity: list[ShownItem] | None
    seconds: float


class DemoRecommender:
    """A checkpoint loaded once for the page: its pipeline, its catalog search and popularity.

    Recommendations come from ``pipeline("item-recommendation")`` (history items excluded), one request at a time:
    the item-state cache swaps the decoder's layers during a forward, which a second concurrent forward would see.

    Example:
        >>> recommender = DemoRecommender(model, collator, popularity=None)
        >>> recommender.recommend([recommender.resolve("w3_0")]).model[0].text
        'w11_0 w11_1 w11_2'
    """

    def __init__(
        self,
        model,
        collator: IAMDataCollator,
        popularity: ItemPopularity | None,
        source: str = "",
        cache_note: str = "item-state cache off",
    ):
        self.model, self.collator, self.popularity, self.source = model, collator, popularity, source
        self._cache_note = cache_note
        self.catalog: ItemCatalog = model.catalog
        self.pipeline = pipeline(TASK, model=model, tokenizer=collator.tokenizer, collator=collator)
        self._lock = threading.Lock()
        self._lowered = [text.lower() for text in self.catalog.texts]
        self._titles = [title_of(text).lower() for text in self.catalog.texts]
        self.added: list[str] = []  # the ids of the items visitors added, oldest first

    @property
    def item_cache_note(self) -> str:
        """Whether the item-state cache serves the leading intra layers (said in the page beside the timing)."""
        if getattr(self.model, "item_cache", None) is not None:
            layers = self.model.num_leading_intra_layers
            which = "leading intra layer reads" if layers == 1 else f"{layers} leading intra layers read"
            return f"item-state cache on: the {which} a table"
        return self._cache_note

    def search(self, query: str, limit: int = MAX_MATCHES) -> list[str]:
        """Item ids whose text contains every word of ``query`` (case-insensitive), exact titles first, then the
        most popular (when popularity is known), then catalog order.

        Example:
            >>> recommender = load_recommender(checkpoint)  # with the popularity saved beside the checkpoint
            >>> recommender.search("w3_0"), recommender.search("w1")[:4]
            (['i3'], ['i12', 'i15', 'i16', 'i18'])
        """
        words = query.lower().split()
        if not words:
            return []
        hits = [index for index, text in enumerate(self._lowered) if all(word in text for word in words)]
        wanted = " ".join(words)
        counts = self.popularity.counts if self.popularity is not None else None

        def order(index: int) -> tuple:
            exact = self._titles[index] == wanted or self._lowered[index] == wanted
            return (not exact, -(float(counts[index]) if counts is not None else 0.0), index)

        return [self.catalog.item_ids[index] for index in sorted(hits, key=order)[:limit]]

    def resolve(self, typed: str) -> str:
        """The item a typed entry names: an exact item text, title or id, else the one search match; otherwise a
        :class:`DemoInputError` that names what was typed."""
        typed = typed.strip()
        if not typed:
            raise DemoInputError("Type a title to search the catalog, then click a match to add it.")
        lowered = typed.lower()
        # zip, not range(len(catalog)): an item being added is in the catalog before it is in these lists
        exact = [index for index, texts in enumerate(zip(self._lowered, self._titles)) if lowered in texts]
        if len(exact) == 1:
            return self.catalog.item_ids[exact[0]]
        if typed in self.catalog and not exact:
            return typed
        matches = self.search(typed, limit=len(self.catalog))
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise DemoInputError(f"No catalog item matches {typed!r} ({len(self.catalog):,} items): try fewer words.")
        raise DemoInputError(f"{typed!r} matches {len(matches)} items: click the one you mean in the list.")

    def recommend(self, history: Sequence[str], k: int = TOP_K) -> ShownLists:
        """The model's top-``k`` (from the pipeline) and popularity's top-``k`` for ``history`` (item ids, oldest
        first); neither list holds a history item. Items in both lists are marked ``in_both``."""
        if not history:
            raise DemoInputError("The history is empty: add at least one item to see recommendations.")
        k = min(k, len(self.catalog))
        with self._lock, torch.inference_mode():
            started = time.perf_counter()
            rows = self.pipeline({"history": list(history)}, top_k=k)
            seconds = time.perf_counter() - started
        model = [
            ShownItem(rank, row["index"], row["item_id"], row["text"], row["score"])
            for rank, row in enumerate(rows, start=1)
        ]
        popular = None
        if self.popularity is not None:
            exclude = set(self.catalog.indices_of(history))
            popular = [
                ShownItem(rank, index, self.catalog.item_ids[index], self.catalog.texts[index], count)
                for rank, (index, count) in enumerate(self.popularity.top(k, exclude), start=1)
            ]
            both = {row.index for row in model} & {row.index for row in popular}
            for row in model + popular:
                row.in_both = row.index in both
        return ShownLists(model, popular, seconds)

    def add_new_item(self, title: str, genres: str = "") -> str:
        """Add an item a visitor describes to the catalog, scored from its text (``model.add_items``); its id.

        The text is rendered as the catalog's are, ``"Title (Year) | Genre, Genre"`` (genres typed with commas or
        ``|``); its id is ``"new:" + title`` (numbered when that title was added before). Refused with a
        :class:`DemoInputError` that names the problem: an empty title, a ``|`` in the title, a text over
        ``MAX_NEW_ITEM_CHARS`` characters or already in the catalog, and more than ``MAX_NEW_ITEMS`` added items
        (the catalog is the server's, shared by every visitor). Popularity counts the new item 0 times.

        Example:
            >>> recommender = DemoRecommender(model, collator, popularity=None)
            >>> item_id = recommender.add_new_item("  The Matrix  (1999) ", "Action|Sci-Fi")
            >>> item_id, recommender.catalog.text_of(item_id), len(recommender.catalog)
            ('new:The Matrix (1999)', 'The Matrix (1999) | Action, Sci-Fi', 21)
            >>> recommender.search("matrix")
            ['new:The Matrix (1999)']
        """
        text = new_item_text(title, genres)
        with self._lock:
            if len(self.added) >= MAX_NEW_ITEMS:
                raise DemoInputError(
                    f"This demo already has {MAX_NEW_ITEMS} new items, as many as one server takes: restart it to "
                    "start again from the checkpoint's catalog."
                )
            if text.lower() in self._lowered:  # as the catalog spells it: the same letters in another case
                known = self.catalog.texts[self._lowered.index(text.lower())]
                raise DemoInputError(f"{known!r} is already in the catalog: search for it to add it to the history.")
            item_id, number = NEW_ITEM_PREFIX + title_of(text), 1
            while item_id in self.catalog:
                number += 1
                item_id = f"{NEW_ITEM_PREFIX}{title_of(text)} #{number}"
            catalog = self.model.add_items([item_id], [text], self.collator)  # the collator renders it from now on
            popularity = self.popularity
            if popularity is not None:  # never counted: ties go to the lower index, so it follows every counted item
                grown = torch.cat(
                    [popularity.counts, popularity.counts.new_zeros(len(catalog) - len(popularity.counts))]
                )
                popularity = dataclasses.replace(popularity, counts=grown)
            # search and resolve read these without the lock: each is replaced whole, and in this order (an index
            # from _lowered, assigned last, is valid in the others)
            self.catalog = catalog
            self.popularity = popularity
            self._titles = [*self._titles, title_of(text).lower()]
            self._lowered = [*self._lowered, text.lower()]
            self.added.append(item_id)
        return item_id

    def rank_of(self, history: Sequence[str], item_id: str) -> tuple[int, int]:
        """Where the model ranks ``item_id`` for ``history``: its 1-based rank among the items not in the history,
        and how many those are. Ties count against it (every other item scoring at least as high is above it).

        Example:
            >>> recommender = DemoRecommender(model, collator, popularity=None)
            >>> top = [row.item_id for row in recommender.recommend(["i3"], k=19).model]
            >>> recommender.rank_of(["i3"], top[4]), recommender.rank_of(["i3"], top[-1])
            ((5, 19), (19, 19))
        """
        if not history:
            raise DemoInputError("The history is empty: add at least one item to see where an item ranks.")
        if item_id in history:
            raise DemoInputError(f"{self.catalog.text_of(item_id)!r} is in the history: it is not ranked.")
        with self._lock, torch.inference_mode():
            catalog = self.model.catalog
            batch = self.collator([{"history": list(history), "target": None}])
            # the whole catalog's scores, as the pipeline's list is made from them (one user: one row)
            scores = self.model(**batch).logits
        excluded = sorted(set(catalog.indices_of(history)))
        rank = target_ranks(scores, torch.tensor([catalog.index_of(item_id)]), [excluded])
        return int(rank[0]), len(catalog) - len(excluded)


def title_of(text: str) -> str:
    """The title part of an item text rendered as ``"Title (Year) | Genres"`` (the whole text otherwise).

    Example:
        >>> title_of("Toy Story (1995) | Animation, Children's, Comedy")
        'Toy Story (1995)'
    """
    return text.split(" | ", 1)[0].strip()


def new_item_text(title: str, genres: str = "") -> str:
    """The catalog text of a new item a visitor types, ``"Title | Genre, Genre"``, whitespace collapsed; refused
    (:class:`DemoInputError`) when the title is empty or holds ``|``, or the text is over ``MAX_NEW_ITEM_CHARS``.

    Example:
        >>> new_item_text(" Heat (1995) ", "Action |Crime, Thriller"), new_item_text("Heat (1995)")
        ('Heat (1995) | Action, Crime, Thriller', 'Heat (1995)')
    """
    title = " ".join(title.split())
    if not title:
        raise DemoInputError("Type the new item's title (with its year, e.g. 'The Matrix (1999)') to add it.")
    if "|" in title:
        raise DemoInputError(f"The title {title!r} holds '|', which separates a title from its genres: leave it out.")
    names = [" ".join(name.split()) for name in re.split(r"[,|]", genres)]
    text = " | ".join([title, ", ".join(name for name in names if name)]) if any(names) else title
    if len(text) > MAX_NEW_ITEM_CHARS:
        raise DemoInputError(
            f"The new item's title and genres are {len(text):,} characters long: at most {MAX_NEW_ITEM_CHARS} are "
            "taken."
        )
    return text


def load_recommender(
    checkpoint: str | os.PathLike, popularity: ItemPopularity | None = None, item_cache: bool = True
) -> DemoRecommender:
    """Load a checkpoint (a folder or a Hub id) for the demo: model, its catalog and prompt settings, popularity.

    ``popularity`` defaults to the ``item_popularity.json`` saved beside the checkpoint (none: the page says so).
    With ``item_cache`` the item-state cache serves the leading intra layers when the checkpoint allows it (the
    reason is shown when it does not). Errors name what is missing and how to get it, as a ``ValueError``.
    """
    checkpoint = os.fspath(checkpoint)
    # "org/name" may be a Hub id (read as from_pretrained reads it); anything else must be a folder here
    if not os.path.exists(checkpoint) and not re.fullmatch(r"[\w.-]+/[\w.-]+", checkpoint):
        raise ValueError(f"There is no checkpoint at {checkpoint}. {HOW_TO_MAKE_A_CHECKPOINT}")
    try:
        model = AutoModel.from_pretrained(checkpoint)
    except (OSError, ValueError) as error:
        raise ValueError(f"{checkpoint} could not be loaded as an IAM checkpoint: {error}") from None
    if not hasattr(model, "recommend"):
        raise ValueError(f"{checkpoint} holds a {type(model).__name__}, not an IAM recommender (model_type 'iam')")
    if getattr(model, "catalog", None) is None:
        raise ValueError(
            f"{checkpoint} has no item catalog (item_catalog.json): the demo needs the items the model scores, in the "
            "order it was trained on. Save the model after model.set_catalog(catalog), as make run does."
        )
    try:
        collator = IAMDataCollator.from_pretrained(checkpoint, catalog=model.catalog)
    except (OSError, ValueError) as error:
        raise ValueError(f"{checkpoint}: its prompt settings or tokenizer could not be loaded: {error}") from None
    model.eval().requires_grad_(False)  # inference only: the item-state cache needs the cached layers frozen
    cache_note = "item-state cache off (--no-item-cache)"
    if item_cache and model.num_leading_intra_layers > 0:
        try:
            model.enable_item_cache(collator)
        except ValueError as error:  # a checkpoint it cannot be exact for: say why, serve without it
            cache_note = f"item-state cache off: {error}"
    elif item_cache:
        cache_note = "item-state cache off: this layout has no leading intra layers"
    if popularity is None:
        popularity = load_item_popularity(checkpoint, model.catalog)
    return DemoRecommender(model, collator, popularity, source=checkpoint, cache_note=cache_note)
