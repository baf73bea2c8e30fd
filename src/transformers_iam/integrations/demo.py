"""A browser demo of a trained IAM checkpoint (Gradio): build a history, see the model's top-10 beside popularity's.

The page is a thin layer over ``pipeline("item-recommendation")``: the pipeline renders the history as in training,
scores the whole catalog and leaves the history out; the demo only finds items by title, keeps the history, ranks
popularity and draws the two lists. A visitor may also add a new item by its title and genres (``model.add_items``,
kept in this process only) and see where the model ranks it for the history. This module is the page: its layout,
its handlers and serving it. Loading the checkpoint, search, the two lists and new items are ``demo_recommender.py``
(no Gradio); what the page shows, as HTML, is ``demo_html.py``, where whatever a checkpoint or a person gives (item
texts and ids, descriptions, typed titles) is escaped (:func:`as_text`); the page loads nothing from any host but its
own. Every public name of those two modules is importable from here too. Gradio is an optional extra
(``pip install -e ".[demo]"``) and is imported only when the page is built, so the rest of the demo (and the library)
works without it. ``make demo`` (which runs ``examples/demo.py``) serves ``runs/cpu-quick-stacked/checkpoint``;
docs/demo.md says what the page shows.

Example:
    >>> recommender = load_recommender(checkpoint)  # a run's folder, e.g. runs/cpu-quick-stacked/checkpoint
    >>> shown = recommender.recommend(recommender.search("w3_0")[:1])
    >>> [row.item_id for row in shown.model][:5], [row.item_id for row in shown.popularity][:5]
    (['i11', 'i7', 'i17', 'i18', 'i2'], ['i12', 'i15', 'i16', 'i18', 'i9'])
    >>> demo = build_demo(recommender)  # the page: demo.launch() serves it
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .demo_html import (
    CSS,
    as_text,
    render_description,
    render_list,
    render_message,
    render_model_list,
    render_popularity_list,
    render_startup_error,
)
from .demo_recommender import (
    DEFAULT_CHECKPOINT,
    HOW_TO_MAKE_A_CHECKPOINT,
    MAX_MATCHES,
    MAX_NEW_ITEM_CHARS,
    MAX_NEW_ITEMS,
    TOP_K,
    DemoInputError,
    DemoRecommender,
    ShownItem,
    ShownLists,
    load_recommender,
    new_item_text,
    title_of,
)

if TYPE_CHECKING:  # Gradio is an optional extra: imported only when a page is built
    import gradio as gr

logger = logging.getLogger(__name__)


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
    # as_text (demo_html.py) into gr.HTML or into the plain-text labels of choices
    with gr.Blocks(title="transformers-iam demo", analytics_enabled=False) as demo:
        gr.Markdown("# IAM recommender: build a history, see what the model recommends")
        if isinstance(recommender, str):
            gr.HTML(render_startup_error(recommender), elem_id="message")
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
    new_title: gr.Textbox
    new_genres: gr.Textbox
    add_new: gr.Button
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
        self.gr = None  # the gradio module, given to build(): imported only when a page is built

    @property
    def catalog(self):
        """The recommender's catalog, read on each use: a visitor's new item extends it (a new object)."""
        return self.recommender.catalog

    def describe(self) -> str:
        """The page's description of the checkpoint and of popularity, as HTML (:func:`render_description`)."""
        return render_description(self.recommender)

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
        new_item = [page.history, page.new_title, page.new_genres]
        page.add_new.click(self.guarded(self.add_new_item), new_item, page.outputs)

    def layout(self) -> _Components:
        """The description, the search beside the history, the new item's title and genres, the message, and the two
        lists side by side."""
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
        with gr.Accordion("Add a new item", open=True):
            with gr.Row():
                new_title = gr.Textbox(label="Title", placeholder="e.g. The Matrix (1999)", elem_id="new-title")
                new_genres = gr.Textbox(label="Genres", placeholder="e.g. Action, Sci-Fi", elem_id="new-genres")
                add_new = gr.Button("Add it to the catalog", elem_id="add-new")
        message = gr.HTML(render_message("Add items to your history to see recommendations."), elem_id="message")
        with gr.Row():
            with gr.Column():
                gr.Markdown("### The model's top-10")
                model_list = gr.HTML(elem_id="model-list")
            with gr.Column():
                gr.Markdown("### Popularity's top-10")
                popularity_list = gr.HTML(elem_id="popularity-list")
        return _Components(
            history,
            query,
            add,
            matches,
            shown,
            remove,
            clear,
            new_title,
            new_genres,
            add_new,
            message,
            model_list,
            popularity_list,
        )

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
        model_html, popular_html = render_model_list(lists.model), render_popularity_list(lists.popularity)
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

    def add_new_item(self, ids: list[str], title: str, genres: str) -> tuple:
        """Add a new item to the catalog (:meth:`DemoRecommender.add_new_item`) and say where the model ranks it for
        the history; the history and its lists are shown again (the new item may now be among them)."""
        item_id = self.recommender.add_new_item(title or "", genres or "")
        added = f"Added new item {self.catalog.text_of(item_id)!r}"
        if not ids:
            *shown, _ = self.show(ids)
            return (*shown, render_message(f"{added}; add history items to see where it ranks."))
        rank, ranked = self.recommender.rank_of(ids, item_id)
        return self.show(ids, f"{added}: for this history it ranks {rank:,} of {ranked:,}.")

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


__all__ = [  # the page's own names, and those of the back end and the HTML it is built from (imported from here)
    "CSS",
    "DEFAULT_CHECKPOINT",
    "HOW_TO_MAKE_A_CHECKPOINT",
    "MAX_MATCHES",
    "MAX_NEW_ITEMS",
    "MAX_NEW_ITEM_CHARS",
    "TOP_K",
    "DemoInputError",
    "DemoRecommender",
    "ShownItem",
    "ShownLists",
    "as_text",
    "build_demo",
    "launch_demo",
    "load_recommender",
    "new_item_text",
    "render_description",
    "render_list",
    "render_message",
    "render_model_list",
    "render_popularity_list",
    "render_startup_error",
    "title_of",
]
