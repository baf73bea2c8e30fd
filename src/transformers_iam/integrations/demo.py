"""A browser demo of a trained IAM checkpoint (Gradio): build a history, see the model's top-10 beside popularity's.

The page is a thin layer over ``pipeline("item-recommendation")``: the pipeline renders the history as in training,
scores the whole catalog and leaves the history out; this module only finds items by title, keeps the history, ranks
popularity and draws the two lists. Whatever a checkpoint or a person gives (item texts and ids, descriptions, typed
titles) is shown as text (:func:`as_text`), and the page loads nothing from any host but its own. Gradio is an
optional extra (``pip install -e ".[demo]"``) and is imported only when the page is built, so the rest of this module
(and the library) works without it. ``make demo`` (which runs ``examples/demo.py``) serves
``runs/cpu-quick-stacked/checkpoint``; docs/demo.md says what the page shows.

Example:
    >>> recommender = load_recommender(checkpoint)  # a run's folder, e.g. runs/cpu-quick-stacked/checkpoint
    >>> shown = recommender.recommend(recommender.search("w3_0")[:1])
    >>> [row.item_id for row in shown.model][:5], [row.item_id for row in shown.popularity][:5]
    (['i11', 'i7', 'i17', 'i18', 'i2'], ['i12', 'i15', 'i16', 'i18', 'i9'])
    >>> demo = build_demo(recommender)  # the page: demo.launch() serves it
"""

from __future__ import annotations

import html
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import AutoModel, pipeline

from ..core.catalog import ItemCatalog
from ..core.collator import IAMDataCollator
from ..core.pipeline_item_recommendation import TASK
from ..recsys.baselines import ItemPopularity, load_item_popularity

if TYPE_CHECKING:  # Gradio is an optional extra: imported only when a page is built
    import gradio as gr

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "runs/cpu-quick-stacked/checkpoint"
TOP_K = 10
MAX_MATCHES = 20
HOW_TO_MAKE_A_CHECKPOINT = (
    "`make run` trains the cpu-quick model on MovieLens-100k (about 4 minutes on 2 CPU cores) and writes "
    f"`{DEFAULT_CHECKPOINT}`; then `make demo`. Any other checkpoint: `make demo ARGS=path/or/hub-id`."
)


class DemoInputError(ValueError):
    """Input the page answers with a message (an unknown title, an empty history), never a traceback."""


# -- the back end (no Gradio) -------------------------------------------------------------------------------------
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
        exact = [index for index in range(len(self.catalog)) if lowered in (self._lowered[index], self._titles[index])]
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


def title_of(text: str) -> str:
    """The title part of an item text rendered as ``"Title (Year) | Genres"`` (the whole text otherwise).

    Example:
        >>> title_of("Toy Story (1995) | Animation, Children's, Comedy")
        'Toy Story (1995)'
    """
    return text.split(" | ", 1)[0].strip()


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


# -- the page -----------------------------------------------------------------------------------------------------
CSS = """
.iam-list table { border-collapse: collapse; width: 100%; }
.iam-list th, .iam-list td { padding: 2px 6px; text-align: left; border-bottom: 1px solid #ddd; }
.iam-list tr.both td { background: #fff3c4; }
.iam-list td.value { text-align: right; font-variant-numeric: tabular-nums; }
"""


def as_text(text: object) -> str:
    """``text`` as HTML that shows it literally: ``& < > " '`` escaped, so no tag, entity or attribute comes of it.

    Every text the page did not write itself (item texts and ids, the checkpoint's path, popularity description and
    errors, what a person types) reaches it through this function, and only into ``gr.HTML`` components (which read
    no Markdown) or as the plain-text labels of radio and checkbox choices: an image link or ``<img>`` in a catalog is
    shown as those characters, never fetched.

    Example:
        >>> as_text("<img src=http://example.com/p.png> ![x](y) & co")
        '&lt;img src=http://example.com/p.png&gt; ![x](y) &amp; co'
    """
    return html.escape(str(text), quote=True)


def render_message(text: str) -> str:
    """The page's message (a ``gr.HTML``): ``text`` shown as text."""
    return f"<p>{as_text(text)}</p>"


def render_list(rows: list[ShownItem] | None, value_name: str, value_format: str, empty: str) -> str:
    """One ranked list as an HTML table; each row carries its item id and exact value in data attributes."""
    if not rows:
        return f"<div class='iam-list'><p>{as_text(empty)}</p></div>"
    lines = [f"<tr><th>#</th><th>item</th><th>{as_text(value_name)}</th></tr>"]
    for row in rows:
        mark = " ★" if row.in_both else ""
        lines.append(
            f"<tr class='{'both' if row.in_both else 'only'}' data-item-id='{as_text(row.item_id)}' "
            f"data-value='{float(row.value)!r}'><td>{int(row.rank)}</td><td>{as_text(row.text)}{mark}</td>"
            f"<td class='value'>{format(float(row.value), value_format)}</td></tr>"
        )
    return f"<div class='iam-list'><table>{''.join(lines)}</table></div>"


def build_demo(recommender: DemoRecommender | str):
    """The Gradio page over ``recommender``; given an error message instead, a page that shows it.

    Example:
        >>> demo = build_demo(load_recommender(checkpoint))  # demo.launch() serves it; see also launch_demo
        >>> type(demo).__name__
        'Blocks'
    """
    try:
        import gradio as gr
    except ImportError as error:
        raise ImportError('the demo needs Gradio: pip install -e ".[demo]" (make demo installs it)') from error

    # Markdown components hold only the page's own constant text: what a checkpoint or a person gives goes through
    # as_text into gr.HTML (render_message, render_list, _Page.describe) or into the plain-text labels of choices
    with gr.Blocks(title="transformers-iam demo", analytics_enabled=False) as demo:
        gr.Markdown("# IAM recommender: build a history, see what the model recommends")
        if isinstance(recommender, str):
            gr.HTML(f"<p><b>The demo could not start.</b> {as_text(recommender)}</p>", elem_id="message")
            return demo
        page = _Page(recommender)
        page.build(gr)
    return demo


@dataclass
class _Components:
    """The components of the page that its handlers read or write."""

    history: gr.State  # the history's item ids, oldest first
    query: gr.Textbox
    add: gr.Button
    matches: gr.Radio
    shown: gr.CheckboxGroup  # the history as the person sees it, with boxes to tick for removal
    remove: gr.Button
    clear: gr.Button
    message: gr.HTML
    model_list: gr.HTML
    popularity_list: gr.HTML

    @property
    def outputs(self) -> list:
        """What a new history changes, in the order :meth:`_Page.show` answers."""
        return [self.history, self.shown, self.matches, self.model_list, self.popularity_list, self.message]


class _Page:
    """The page's components and handlers; every handler answers bad input with a message, never a traceback."""

    def __init__(self, recommender: DemoRecommender):
        self.recommender = recommender
        self.catalog = recommender.catalog
        self.gr = None  # the gradio module, given to build(): imported only when a page is built

    def describe(self) -> str:
        """The checkpoint, its layers, the cache and what popularity counts, as HTML (the checkpoint's strings as
        text)."""
        recommender, config = self.recommender, self.recommender.model.config
        popularity = (
            recommender.popularity.description
            if recommender.popularity is not None
            else "not shown: this checkpoint has no item_popularity.json and the run's interactions were not found"
        )
        return (
            f"<p>Checkpoint <code>{as_text(recommender.source)}</code>: {len(recommender.catalog):,} items, layers "
            f"{as_text(', '.join(map(str, config.resolved_layer_types)))}; {as_text(recommender.item_cache_note)}. "
            'The model\'s list comes from <code>pipeline("item-recommendation")</code> over the whole catalog; items '
            "in your history are never recommended, by either list. ★ marks items both lists give.</p>"
            f"<p><b>Popularity</b> = {as_text(popularity)}.</p>"
        )

    def build(self, gr) -> None:
        """Lay the page out (inside the caller's ``gr.Blocks``) and wire every control to its handler."""
        self.gr = gr
        page = self.layout()
        page.query.input(self.search, page.query, page.matches, show_progress="hidden", trigger_mode="always_last")
        page.query.submit(self.guarded(self.add_typed), [page.history, page.query], page.outputs)
        page.add.click(self.guarded(self.add_typed), [page.history, page.query], page.outputs)
        page.matches.input(self.guarded(self.add_match), [page.history, page.matches], page.outputs)
        page.remove.click(self.guarded(self.remove_items), [page.history, page.shown], page.outputs)
        page.clear.click(self.guarded(self.clear_history), [page.history], page.outputs)

    def layout(self) -> _Components:
        """The description, the search beside the history, the message, and the two lists side by side."""
        gr = self.gr
        gr.HTML(self.describe(), elem_id="about")
        history = gr.State([])
        with gr.Row():
            with gr.Column(scale=2):
                query = gr.Textbox(
                    label="Search the catalog by title",
                    placeholder="e.g. star wars",
                    elem_id="search",
                )
                add = gr.Button("Add the typed title", elem_id="add")
                matches = gr.Radio(choices=[], label="Matches: click one to add it", elem_id="matches")
            with gr.Column(scale=3):
                shown = gr.CheckboxGroup(choices=[], label="Your history, oldest first", elem_id="history")
                with gr.Row():
                    remove = gr.Button("Remove ticked items", elem_id="remove")
                    clear = gr.Button("Clear the history", elem_id="clear")
        message = gr.HTML(render_message("Add items to your history to see recommendations."), elem_id="message")
        with gr.Row():
            with gr.Column():
                gr.Markdown("### The model's top-10")
                model_list = gr.HTML(elem_id="model-list")
            with gr.Column():
                gr.Markdown("### Popularity's top-10")
                popularity_list = gr.HTML(elem_id="popularity-list")
        return _Components(history, query, add, matches, shown, remove, clear, message, model_list, popularity_list)

    def choices(self, ids: list[str]) -> list[tuple[str, str]]:
        """Items as ``(text shown, item id)`` choices of a radio or checkbox group."""
        return [(self.catalog.text_of(item_id), item_id) for item_id in ids]

    def show(self, ids: list[str], note: str = "") -> tuple:
        """Everything a new history changes: the state, the history box, the match list, both lists, the message."""
        gr = self.gr
        box = gr.CheckboxGroup(choices=self.choices(ids), value=[])
        unselected = gr.Radio(value=None)  # so that clicking the same match again adds it again
        if not ids:
            text = f"{note} The history is empty: add at least one item to see recommendations."
            return ids, box, unselected, "", "", render_message(text.strip())
        lists = self.recommender.recommend(ids)
        model_html = render_list(lists.model, "score", ".4f", "No item is left to recommend.")
        if lists.popularity is None:
            popular_html = "<div class='iam-list'><p>Popularity is not known for this checkpoint.</p></div>"
        else:
            popular_html = render_list(lists.popularity, "count", ".0f", "No item is left to recommend.")
        timing = f"Recommended in {lists.seconds * 1000:.0f} ms ({self.recommender.item_cache_note})."
        return ids, box, unselected, model_html, popular_html, render_message(f"{note} {timing}".strip())

    def guarded(self, handler):
        """Bad input becomes the page's message; an unexpected error is logged here and named there."""
        gr = self.gr

        def run(ids, *args):
            try:
                return handler(list(ids), *args)
            except DemoInputError as error:
                return (gr.skip(),) * 5 + (render_message(str(error)),)
            except Exception as error:  # the page must never show a traceback: name the error, log the rest
                logger.exception("demo request failed")
                return (gr.skip(),) * 5 + (render_message(f"Something went wrong: {type(error).__name__}: {error}"),)

        return run

    # -- the handlers of the history: its item ids first, the answer is _Components.outputs's six values ---------
    def add_item(self, ids: list[str], item_id: str) -> tuple:
        """The history with ``item_id`` added last (refused when it is already in it)."""
        if item_id in ids:
            raise DemoInputError(f"{self.catalog.text_of(item_id)!r} is already in the history.")
        return self.show(ids + [item_id], f"Added {self.catalog.text_of(item_id)!r}.")

    def add_typed(self, ids: list[str], typed: str) -> tuple:
        """Add the item the typed entry names (see :meth:`DemoRecommender.resolve`)."""
        return self.add_item(ids, self.recommender.resolve(typed or ""))

    def add_match(self, ids: list[str], item_id: str | None) -> tuple:
        """Add the clicked match; nothing changes when the match list is merely cleared (``item_id`` empty)."""
        if not item_id:
            return (self.gr.skip(),) * 6
        return self.add_item(ids, item_id)

    def remove_items(self, ids: list[str], ticked: list[str]) -> tuple:
        """The history without the ticked items (refused when none is ticked)."""
        if not ticked:
            raise DemoInputError("Tick the history items to remove first.")
        removed = [self.catalog.text_of(item_id) for item_id in ids if item_id in ticked]
        return self.show([item_id for item_id in ids if item_id not in ticked], f"Removed {'; '.join(removed)}.")

    def clear_history(self, ids: list[str]) -> tuple:
        """An empty history."""
        return self.show([], "History cleared.")

    def search(self, typed: str):
        """The match list for what is typed so far, its label naming the query (it changes nothing else)."""
        typed = (typed or "").strip()
        found = self.recommender.search(typed)
        if not typed:
            label = "Matches: click one to add it"
        elif found:  # the query in the label: a person (and a test) can tell the list is for what was typed
            more = "+" if len(found) == MAX_MATCHES else ""
            label = f"Matches for {typed!r}: click one to add it ({len(found)}{more})"
        else:
            label = f"No catalog item matches {typed!r}"
        return self.gr.Radio(choices=self.choices(found), value=None, label=label)


def launch_demo(
    recommender: DemoRecommender | str, host: str = "127.0.0.1", port: int | None = None, block: bool = True
):
    """Serve the page on ``host:port`` (``port=None``: Gradio's first free port from 7860), with nothing fetched from
    outside: no analytics, no share link, no server-side rendering; returns ``(app, local_url)``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_demo(recommender)
    import gradio as gr

    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        prevent_thread_lock=not block,
        quiet=not block,
        theme=gr.themes.Default(),
        css=CSS,
        footer_links=[],
    )
    return demo, url
