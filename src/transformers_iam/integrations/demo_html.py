"""What the demo page shows, as HTML: every text it did not write itself is escaped here (:func:`as_text`).

The description of the checkpoint, the page's message, the two ranked lists and the page a checkpoint that cannot be
served gets are built here and only here, so that one file says how a catalog's or a person's text reaches the page:
escaped into ``gr.HTML`` components, never read as Markdown or markup. No Gradio: ``demo.py`` puts these strings
into the page; ``demo_recommender.py`` makes the lists they draw.

Example:
    >>> render_message("<b>no</b> such item")
    '<p>&lt;b&gt;no&lt;/b&gt; such item</p>'
"""

from __future__ import annotations

import html

from .demo_recommender import DemoRecommender, ShownItem

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


def render_startup_error(text: str) -> str:
    """The whole page's message when the checkpoint cannot be served: ``text`` (the error) shown as text."""
    return f"<p><b>The demo could not start.</b> {as_text(text)}</p>"


def render_description(recommender: DemoRecommender) -> str:
    """The checkpoint, its layers, the cache and what popularity counts, as HTML (the checkpoint's strings as text)."""
    config = recommender.model.config
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


def render_model_list(rows: list[ShownItem]) -> str:
    """The model's list as an HTML table (its scores to four places)."""
    return render_list(rows, "score", ".4f", "No item is left to recommend.")


def render_popularity_list(rows: list[ShownItem] | None) -> str:
    """Popularity's list as an HTML table, or a line saying it is not known (``rows`` is ``None``)."""
    if rows is None:
        return "<div class='iam-list'><p>Popularity is not known for this checkpoint.</p></div>"
    return render_list(rows, "count", ".0f", "No item is left to recommend.")
