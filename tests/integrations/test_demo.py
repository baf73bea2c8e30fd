"""The browser demo (integrations/demo.py, examples/demo.py): its lists are the pipeline's and popularity's, bad input
gets a message, and a real headless Chromium drives the real Gradio page as a person would.

The browser tests need Debian's ``chromium`` (``.ci/run`` installs it), Playwright and Gradio (the test and demo
extras): without them they skip with that reason, except under CI (``CI`` set), where they fail, so that a CI
machine without a browser cannot pass by skipping them.
"""

from __future__ import annotations

import http.server
import importlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from html.parser import HTMLParser
from urllib.parse import urlparse

import pytest
import torch
from transformers import AutoModel

from transformers_iam import IAMDataCollator, ItemCatalog
from transformers_iam.integrations.demo import DemoInputError, load_recommender
from transformers_iam.recsys.baselines import (
    POPULARITY_FILE,
    ItemPopularity,
    load_item_popularity,
    save_item_popularity,
)

from ..testing_utils import catalog_tokenizer, collator_kwargs, synthetic_catalog, tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# headless on a machine with no network: without the background-networking flags Chromium keeps dialling out
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# a known training history: i2 is the most popular item (5), then i5 and i9 (3), then i0, i3, i12, i14, i17 (1), then
# the rest (0), ties in catalog order
TRAINING = {
    "u1": ["i2", "i5", "i9", "i2", "i0"],
    "u2": ["i2", "i5", "i9", "i12", "i2"],
    "u3": ["i5", "i2", "i14", "i17", "i9", "i3"],
}

EXPECTED_POPULARITY = [("i2", 5), ("i5", 3), ("i9", 3)] + [(f"i{n}", 1) for n in (0, 3, 12, 14, 17)]
EXPECTED_POPULARITY += [(f"i{n}", 0) for n in range(20) if f"i{n}" not in dict(EXPECTED_POPULARITY)]


def save_checkpoint(
    path,
    layout: str = "stacked",
    popularity: bool = True,
    catalog: ItemCatalog | None = None,
    description: str = "interaction counts of three made-up users",
):
    """A tiny checkpoint as the main job writes one: weights, catalog, prompt settings, tokenizer (+ popularity)."""
    catalog = catalog or synthetic_catalog(20)
    model = tiny_model(num_items=len(catalog), iam_layout=layout, seed=3)
    model.set_catalog(catalog)
    model.save_pretrained(path)
    IAMDataCollator(catalog_tokenizer(catalog), catalog, max_length=64, **collator_kwargs()).save_pretrained(path)
    if popularity:
        save_item_popularity(path, TRAINING, catalog, description)
    return catalog


def expected_top(path, history: list[str], k: int = 10):
    """What `model.recommend` gives for ``history``, from a fresh load of the checkpoint (no item cache)."""
    model = AutoModel.from_pretrained(path).eval()
    batch = IAMDataCollator.from_pretrained(path)([{"history": history}])
    return model.recommend(
        batch["input_ids"],
        batch["attention_mask"],
        batch["item_segment_ids"],
        k=k,
        exclude_item_ids=batch["history_item_indices"],
    )


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "checkpoint"
    save_checkpoint(path)
    return str(path)


# -- the back end, without a browser ------------------------------------------------------------------------------
def test_lists_are_the_models_and_populars_without_the_history(checkpoint):
    recommender = load_recommender(checkpoint)
    assert recommender.model.item_cache is not None, "a stacked checkpoint must be served from the item-state cache"
    assert "item-state cache on" in recommender.item_cache_note
    # a history of the model's own favourites: a list that kept history items would show them
    favourites = [row["item_id"] for row in recommender.pipeline({"history": ["i2"]}, top_k=3, exclude_history=False)]
    history = list(dict.fromkeys(["i2", *favourites]))
    shown = recommender.recommend(history)
    expected = expected_top(checkpoint, history)
    assert [row.item_id for row in shown.model] == expected.item_ids[0]
    torch.testing.assert_close(torch.tensor([row.value for row in shown.model]), expected.scores[0])
    # popularity: the most frequent training items, history left out (i2, the most popular, is in the history)
    popular = [(row.item_id, row.value) for row in shown.popularity]
    assert popular == [(item_id, count) for item_id, count in EXPECTED_POPULARITY if item_id not in history][:10]
    assert not set(history) & {row.item_id for row in shown.model + shown.popularity}
    both = {row.item_id for row in shown.model} & {row.item_id for row in shown.popularity}
    assert both and all(row.in_both == (row.item_id in both) for row in shown.model + shown.popularity)
    assert shown.seconds > 0


def test_the_cache_is_exact_and_refused_with_a_reason(tmp_path, checkpoint):
    cached, live = load_recommender(checkpoint), load_recommender(checkpoint, item_cache=False)
    assert live.model.item_cache is None and "off" in live.item_cache_note
    for history in (["i1"], ["i4", "i19", "i8", "i3"]):
        assert [row.item_id for row in cached.recommend(history).model] == [
            row.item_id for row in live.recommend(history).model
        ]
    save_checkpoint(tmp_path / "vanilla", layout="vanilla")
    vanilla = load_recommender(tmp_path / "vanilla")
    assert vanilla.model.item_cache is None and "no leading intra layers" in vanilla.item_cache_note


def test_search_and_typed_titles(checkpoint):
    recommender = load_recommender(checkpoint)
    # every word of the query, case-insensitive; the most popular first (i12, i14 and i17 occur once in TRAINING)
    assert recommender.search("W1") == ["i12", "i14", "i17", "i1", "i10", "i11", "i13", "i15", "i16", "i18", "i19"]
    assert recommender.search("w1_0 w1_1") == ["i1"]
    assert recommender.search("  ") == []
    assert recommender.resolve("w13_0 w13_1") == "i13"  # an exact text
    assert recommender.resolve("w13") == "i13"  # the only match
    assert recommender.resolve("i7") == "i7"  # an item id
    with pytest.raises(DemoInputError, match=r"No catalog item matches 'Star Wars \(1977\)' \(20 items\)"):
        recommender.resolve("Star Wars (1977)")
    with pytest.raises(DemoInputError, match=r"'w1' matches 11 items: click the one you mean"):
        recommender.resolve("w1")
    with pytest.raises(DemoInputError, match="The history is empty: add at least one item"):
        recommender.recommend([])


def test_a_history_covering_the_catalog_leaves_what_is_left(checkpoint, catalog):
    recommender = load_recommender(checkpoint)
    shown = recommender.recommend(catalog.item_ids[:17])
    assert sorted(row.item_id for row in shown.model) == sorted(catalog.item_ids[17:])
    assert sorted(row.item_id for row in shown.popularity) == sorted(catalog.item_ids[17:])


def test_bad_checkpoints_are_named_with_what_to_do(tmp_path, checkpoint):
    with pytest.raises(ValueError, match=r"There is no checkpoint at .*missing\. `make run` trains"):
        load_recommender(str(tmp_path / "missing"))
    no_catalog = tmp_path / "no-catalog"
    shutil.copytree(checkpoint, no_catalog)
    os.remove(no_catalog / "item_catalog.json")
    with pytest.raises(ValueError, match=r"has no item catalog \(item_catalog.json\)"):
        load_recommender(no_catalog)
    # popularity counts written for another catalog would sit on other items
    other = tmp_path / "other"
    save_checkpoint(other)
    content = json.loads((other / POPULARITY_FILE).read_text())
    content["catalog_fingerprint"] = "0" * 64
    (other / POPULARITY_FILE).write_text(json.dumps(content))
    with pytest.raises(ValueError, match="written for another catalog"):
        load_recommender(other)


def test_without_popularity_the_page_says_so(tmp_path):
    save_checkpoint(tmp_path / "plain", popularity=False)
    recommender = load_recommender(tmp_path / "plain")
    assert recommender.popularity is None and recommender.recommend(["i1"]).popularity is None
    require("gradio")
    from transformers_iam.integrations.demo import _Page

    assert "<b>Popularity</b> = not shown" in _Page(recommender).describe()


def load_example():
    spec = importlib.util.spec_from_file_location("demo_example", os.path.join(ROOT, "examples", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_popularity_of_a_main_job_checkpoint_is_its_training_interactions(tmp_path):
    """The main job (tiny backbone, seconds) saves item_popularity.json: each item counted in the training sequences
    (validation and test targets held out); without that file the example reads the run's data again."""
    from transformers_iam.experiments import RunArguments, run_experiment
    from transformers_iam.experiments.build import load_data
    from transformers_iam.recsys.baselines import popularity_scores

    from ..testing_utils import tiny_run_files

    config = RunArguments.from_preset(None, output_dir=str(tmp_path / "run"), **tiny_run_files(str(tmp_path)))
    run_experiment(config)
    checkpoint = str(tmp_path / "run" / "checkpoint")
    data = load_data(config)
    saved = load_item_popularity(checkpoint, data.catalog)
    assert torch.equal(saved.counts, popularity_scores(data.visible_sequences("valid"), data.catalog))
    assert "validation and test targets, are not counted" in saved.description
    assert "50 interactions of 10 users" in saved.description  # 10 users x (7 - 2)
    assert load_recommender(checkpoint).popularity.description == saved.description
    os.remove(os.path.join(checkpoint, POPULARITY_FILE))  # an older checkpoint: the example counts them again
    popularity = load_example().popularity_for(checkpoint)
    assert torch.equal(popularity.counts, saved.counts) and popularity.description == saved.description


def test_the_example_says_how_to_make_the_default_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no runs/ here
    assert load_example().main([]) == 2
    assert "There is no checkpoint at runs/cpu-quick-stacked/checkpoint yet. `make run`" in capsys.readouterr().err


def test_a_hub_id_is_served_from_the_hub_cache_offline(tmp_path, checkpoint):
    """A Hub id resolves through huggingface_hub's cache (populated as a download would), nothing fetched."""
    from .test_hub import populate_cache

    cache = tmp_path / "hub-cache"
    populate_cache(cache, "org/iam-demo", __import__("pathlib").Path(checkpoint))
    script = textwrap.dedent(
        """
        import json
        from transformers_iam.integrations.demo import load_recommender
        recommender = load_recommender("org/iam-demo")
        shown = recommender.recommend(["i2", "i7"])
        print(json.dumps({"model": [r.item_id for r in shown.model], "popular": [r.item_id for r in shown.popularity],
                          "cache": recommender.model.item_cache is not None}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["model"] == expected_top(checkpoint, ["i2", "i7"]).item_ids[0] and served["cache"]
    assert served["popular"][:2] == ["i5", "i9"]


def test_item_popularity_ties_keep_catalog_order():
    popularity = ItemPopularity(torch.tensor([1.0, 3.0, 1.0, 3.0, 0.0]), "toy")
    assert popularity.top(5, exclude={3}) == [(1, 3), (0, 1), (2, 1), (4, 0)]


# -- a new item a visitor adds ------------------------------------------------------------------------------------
def favourite_history(recommender) -> list[str]:
    """i2 and the model's own favourites for it: history items that outscore most others, so a rank that counted
    them would be off."""
    favourites = [row["item_id"] for row in recommender.pipeline({"history": ["i2"]}, top_k=3, exclude_history=False)]
    return list(dict.fromkeys(["i2", *favourites]))


def test_a_new_item_joins_the_catalog_and_its_rank_is_its_place_in_the_list(checkpoint):
    recommender = load_recommender(checkpoint)
    history = favourite_history(recommender)
    item_id = recommender.add_new_item(" The  Matrix (1999) ", " Action |Sci-Fi, ")
    assert item_id == "new:The Matrix (1999)" and recommender.added == [item_id]
    catalog = recommender.catalog
    assert catalog.item_ids == [f"i{n}" for n in range(20)] + [item_id]
    assert catalog.text_of(item_id) == "The Matrix (1999) | Action, Sci-Fi"
    # one catalog for the model, the collator and the pipeline (which renders and scores the new item)
    assert recommender.model.catalog is catalog and recommender.collator.catalog is catalog
    assert recommender.model.config.num_items == 21 and recommender.model.item_cache is not None
    with torch.inference_mode():
        logits = recommender.model(**recommender.collator([{"history": history, "target": None}])).logits
    assert logits.shape == (1, 21)

    # rank_of is the item's place in the pipeline's whole list for the history (history items neither listed nor
    # counted), for the new item and for every other
    full = [row.item_id for row in recommender.recommend(history, k=len(catalog)).model]
    assert len(full) == 21 - len(history) and item_id in full and not set(history) & set(full)
    for shown in full:
        assert recommender.rank_of(history, shown) == (full.index(shown) + 1, len(full)), shown
    with pytest.raises(DemoInputError, match="The history is empty"):
        recommender.rank_of([], item_id)
    with pytest.raises(DemoInputError, match=r"'w2_0 w2_1 w2_2' is in the history: it is not ranked"):
        recommender.rank_of(history, "i2")

    # the same item added to a server without the item-state cache gets the same list
    live = load_recommender(checkpoint, item_cache=False)
    assert live.add_new_item("The Matrix (1999)", "Action, Sci-Fi") == item_id
    assert [row.item_id for row in live.recommend(history, k=21).model] == full

    # search, typed titles and histories find it
    assert recommender.search("matrix") == [item_id] and recommender.search("SCI-FI action") == [item_id]
    assert recommender.resolve("the matrix (1999)") == item_id
    in_history = [row.item_id for row in recommender.recommend(["i1", item_id], k=21).model]
    assert len(in_history) == 19 and item_id not in in_history
    assert recommender.rank_of([item_id], "i1")[1] == 20


def test_a_new_item_is_never_more_popular_than_a_counted_one(checkpoint):
    recommender = load_recommender(checkpoint)
    item_id = recommender.add_new_item("Heat (1995)", "Action")
    assert recommender.popularity.counts.tolist() == [float(dict(EXPECTED_POPULARITY)[f"i{n}"]) for n in range(20)] + [
        0.0
    ]
    expected = [(catalog_id, count) for catalog_id, count in EXPECTED_POPULARITY if catalog_id != "i2"]
    popular = recommender.recommend(["i2"], k=20).popularity
    assert [(row.item_id, row.value) for row in popular] == expected + [(item_id, 0)]  # last: count 0, last index
    assert recommender.popularity.top(21, exclude=set())[-1] == (20, 0)
    top = recommender.recommend([item_id], k=10).popularity  # a history of the new item: the same top-10
    assert [(row.item_id, row.value) for row in top] == EXPECTED_POPULARITY[:10]


def test_new_items_are_refused_by_name_and_change_nothing(checkpoint, monkeypatch):
    from transformers_iam.integrations import demo_recommender

    recommender = load_recommender(checkpoint)
    first = recommender.add_new_item("Heat (1995)", "Action")

    def refused(title: str, genres: str, message: str) -> None:
        catalog, popularity, size = recommender.catalog, recommender.popularity, len(recommender.model.catalog)
        added = list(recommender.added)
        with pytest.raises(DemoInputError, match=message):
            recommender.add_new_item(title, genres)
        assert recommender.catalog is catalog and recommender.popularity is popularity
        assert len(recommender.model.catalog) == recommender.model.config.num_items == size
        assert len(recommender.collator.catalog) == len(recommender._lowered) == len(recommender._titles) == size
        assert recommender.added == added

    refused("", "Drama", r"Type the new item's title \(with its year")
    refused(" \n\t ", "Drama", r"Type the new item's title")
    refused("w1_0 w1_1", "", r"'w1_0 w1_1' is already in the catalog")  # i1's text
    refused("HEAT  (1995)", "action|", r"'Heat \(1995\) \| Action' is already in the catalog")  # the one just added
    refused("A | B (2001)", "Drama", r"The title 'A \| B \(2001\)' holds '\|'")
    refused("x" * 190, "Drama, Comedy", r"are 206 characters long: at most 200 are taken")
    refused("x" * 201, "", r"are 201 characters long")
    # the same title with other genres is another item, with an id of its own
    second = recommender.add_new_item("Heat (1995)", "Crime")
    assert second == "new:Heat (1995) #2" and recommender.catalog.text_of(second) == "Heat (1995) | Crime"
    assert recommender.added == [first, second]
    # the cap (50 in a server; 2 here, so that the test adds few items)
    monkeypatch.setattr(demo_recommender, "MAX_NEW_ITEMS", 2)
    refused("Ronin (1998)", "Action", r"This demo already has 2 new items, as many as one server takes")
    assert len(recommender.catalog) == recommender.model.config.num_items == 22


# -- the page in a real browser -----------------------------------------------------------------------------------
def require(module: str):
    """Import what the browser tests need; skip without it locally, fail under CI (which installs it all)."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f'{module} is not installed (pip install -e ".[test,demo]")')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def browser_page(tmp_path):
    """A page of headless Debian Chromium (driven by Playwright, which downloads no browser here), fresh profile."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: install Debian's chromium first (.ci/run does)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    playwright_api = require("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.set_viewport_size({"width": 1280, "height": 1000})
        yield page
        context.close()


@pytest.fixture
def outside_connections(monkeypatch):
    """Every address this process connects to or looks up that is not this machine (the server side of "nothing is
    downloaded at run time": Gradio's version check, analytics, fonts or a share tunnel would show up here)."""
    seen = []
    local = ("127.", "::1", "localhost", "0.0.0.0")
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def recording_connect(self, address):
        if isinstance(address, tuple) and not str(address[0]).startswith(local):
            seen.append(address[0])
        return connect(self, address)

    def recording_getaddrinfo(host, *args, **kwargs):
        if host is not None and not str(host).startswith(local):
            seen.append(host)
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)
    return seen


@pytest.fixture
def served(checkpoint, outside_connections):
    require("gradio")
    from transformers_iam.integrations.demo import launch_demo

    demo, url = launch_demo(load_recommender(checkpoint), port=free_port(), block=False)
    yield url
    demo.close()


def read_list(page, element_id: str) -> list[tuple[str, float, bool]]:
    """A list as the page shows it: (item id, score or count, marked as in both lists), top first."""
    rows = page.locator(f"#{element_id} tr[data-item-id]").all()
    return [
        (
            row.get_attribute("data-item-id"),
            float(row.get_attribute("data-value")),
            "both" in row.get_attribute("class"),
        )
        for row in rows
    ]


def history_shown(page) -> list[str]:
    return [label.inner_text().strip() for label in page.locator("#history label").all()]


def wait_for_history(page, texts: list[str]) -> None:
    page.wait_for_function(
        "(texts) => JSON.stringify([...document.querySelectorAll('#history label')].map(l => l.innerText.trim()))"
        " === JSON.stringify(texts)",
        arg=texts,
    )


def wait_for_text(page, selector: str, fragment: str) -> None:
    page.wait_for_function(
        "([selector, fragment]) => document.querySelector(selector).innerText.includes(fragment)",
        arg=[selector, fragment],
    )


def message(page) -> str:
    return page.locator("#message").inner_text()


def wait_for_message(page, fragment: str) -> str:
    page.wait_for_function(
        "(fragment) => document.querySelector('#message').innerText.includes(fragment)", arg=fragment
    )
    return message(page)


def type_and_pick(page, typed: str, text: str) -> None:
    """Type into the search box as a person does (key by key), then click the match whose label is ``text``."""
    search = page.locator("#search textarea, #search input").first
    search.fill("")
    search.press_sequentially(typed, delay=30)
    # wait for the list of what was typed (the list of its first letters may still be on screen)
    page.wait_for_selector(f"#matches >> text=Matches for '{typed}'")
    page.locator("#matches").get_by_label(text, exact=True).click()


def test_the_page_in_a_real_browser(browser_page, served, outside_connections, checkpoint, catalog, tmp_path):
    page, requests = browser_page, []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(served)
    page.wait_for_selector("#search")
    assert "Popularity = interaction counts of three made-up users" in page.locator("#about").inner_text()

    # bad input first: an unknown title, and nothing in the history
    search = page.locator("#search textarea, #search input").first
    search.press_sequentially("Star Wars (1977)", delay=10)
    page.wait_for_selector("#matches >> text=No catalog item matches 'Star Wars (1977)'")
    page.locator("#add").click()
    assert "No catalog item matches 'Star Wars (1977)' (20 items)" in wait_for_message(page, "Star Wars")
    page.locator("#remove").click()
    wait_for_message(page, "Tick the history items to remove first.")

    # a history built by typing and clicking: two picked from the match lists, one typed and sent with Enter
    type_and_pick(page, "w1", catalog.text_of("i1"))
    wait_for_history(page, [catalog.text_of("i1")])
    type_and_pick(page, "w7", catalog.text_of("i7"))
    wait_for_history(page, [catalog.text_of("i1"), catalog.text_of("i7")])
    search.fill("")
    search.press_sequentially("w13", delay=30)
    search.press("Enter")
    history = ["i1", "i7", "i13"]
    wait_for_history(page, [catalog.text_of(item_id) for item_id in history])
    assert re.search(r"Recommended in \d+ ms \(item-state cache on", wait_for_message(page, "Recommended in"))

    model_rows, popular_rows = read_list(page, "model-list"), read_list(page, "popularity-list")
    expected = expected_top(checkpoint, history)
    assert [item_id for item_id, _, _ in model_rows] == expected.item_ids[0]
    torch.testing.assert_close(torch.tensor([score for _, score, _ in model_rows]), expected.scores[0])
    assert [item_id for item_id, _, _ in popular_rows][:4] == ["i2", "i5", "i9", "i0"]
    assert not set(history) & {item_id for item_id, _, _ in model_rows + popular_rows}
    both = {row[0] for row in model_rows} & {row[0] for row in popular_rows}
    assert both and all(marked == (item_id in both) for item_id, _, marked in model_rows + popular_rows)
    assert page.locator("#model-list tr.both").count() == len(both)
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)

    # adding an item twice is refused by name; removing one changes the lists to the model's for what is left
    type_and_pick(page, "w7", catalog.text_of("i7"))
    wait_for_message(page, f"'{catalog.text_of('i7')}' is already in the history")
    page.locator("#history").get_by_label(catalog.text_of("i7"), exact=True).check()
    page.locator("#remove").click()
    wait_for_history(page, [catalog.text_of("i1"), catalog.text_of("i13")])
    after = expected_top(checkpoint, ["i1", "i13"])
    page.wait_for_function(
        "(ids) => JSON.stringify([...document.querySelectorAll('#model-list tr[data-item-id]')]"
        ".map(r => r.dataset.itemId)) === JSON.stringify(ids)",
        arg=after.item_ids[0],
    )
    assert [row[0] for row in read_list(page, "model-list")] != [row[0] for row in model_rows]

    # a new item typed as markup: added, ranked for the history as the model's whole list places it, shown as text,
    # then found by the search box and added to the history
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    title, item_id = "<img src=x onerror=alert(1)>", "new:<img src=x onerror=alert(1)>"
    page.locator("#new-title textarea, #new-title input").first.fill(title)
    page.locator("#new-genres textarea, #new-genres input").first.fill("Drama|<b>Comedy</b>")
    page.locator("#add-new").click()
    text = f"{title} | Drama, <b>Comedy</b>"
    fresh = load_recommender(checkpoint, item_cache=False)  # the same item added to a fresh load: its whole list
    assert fresh.add_new_item(title, "Drama|<b>Comedy</b>") == item_id
    full = [row.item_id for row in fresh.recommend(["i1", "i13"], k=21).model]
    rank = full.index(item_id) + 1
    wait_for_message(page, f"Added new item {text!r}: for this history it ranks {rank} of 19.")
    if rank <= 10:  # among the model's top-10 now, its text shown literally
        wait_for_text(page, "#model-list", text)
    type_and_pick(page, "onerror", text)
    wait_for_history(page, [catalog.text_of("i1"), catalog.text_of("i13"), text])
    wait_for_message(page, f"Added {text!r}.")
    page.wait_for_timeout(300)  # time for an image that were to load (and fail) to run its onerror
    assert dialogs == [] and page.locator("#message img, #history img, #matches img, #model-list img").count() == 0
    assert not [url for url in requests if urlparse(url).path.endswith("/x")], "the typed <img> was loaded"

    # clearing leaves an empty history, which says so instead of showing lists
    page.locator("#clear").click()
    wait_for_history(page, [])
    assert "add at least one item" in wait_for_message(page, "History cleared.")
    assert page.locator("#model-list tr").count() == 0

    assert "Traceback" not in page.content()
    hosts = {urlparse(url).netloc for url in requests if not url.startswith(("data:", "blob:"))}
    assert hosts == {urlparse(served).netloc}, f"the page fetched from elsewhere: {hosts}"
    assert outside_connections == [], f"the server reached out: {outside_connections}"


def test_a_checkpoint_error_is_a_page_not_a_traceback(browser_page, tmp_path):
    require("gradio")
    from transformers_iam.integrations.demo import launch_demo

    try:
        load_recommender(tmp_path / "nothing-here")
    except ValueError as error:
        problem = str(error)
    demo, url = launch_demo(problem, port=free_port(), block=False)
    try:
        browser_page.goto(url)
        text = browser_page.locator("#message").inner_text()
        assert "The demo could not start." in text and "There is no checkpoint at" in text and "make run" in text
        assert "Traceback" not in browser_page.content()
    finally:
        demo.close()


# -- text from a checkpoint or a person is shown as text; the page fetches nothing from other hosts ---------------
class _Recording(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def elsewhere():
    """A web server on another port of this machine standing for any other host (a browser tells hosts apart by
    port): the hostile texts name it, and it records every request that reaches it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recording)
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def hostile_texts(origin: str) -> dict[str, str]:
    """Item texts that load ``origin`` (or run script) wherever they are read as Markdown or HTML (one word each,
    h0..h7, finds them by search)."""
    return {
        "i0": f"![md]({origin}/markdown-image.png) h0",
        "i1": f"<img src={origin}/html-image.png> h1",
        "i3": "<script>window.pwned=1</script><img src=x onerror=window.pwned=2> h3",
        "i4": f"[link]({origin}/link) **bold** _em_ `code` # h4",
        "i5": f"<style>@import url({origin}/style.css);</style> h5",
        "i6": "{{value}} ${value} &amp; <b>bold</b> h6",
        "i7": f"<iframe src={origin}/frame></iframe> h7",
    }


@pytest.fixture
def hostile(tmp_path, elsewhere):
    """A checkpoint whose item texts, an item id, popularity description and folder name are markup that loads
    from ``elsewhere``: ``(path, catalog, origin)``."""
    origin = f"http://127.0.0.1:{elsewhere.server_port}"
    texts, plain = hostile_texts(origin), synthetic_catalog(20)
    ids = [f"i8<img src={origin}/item-id.png>" if item_id == "i8" else item_id for item_id in plain.item_ids]
    catalog = ItemCatalog(ids, [texts.get(item_id, text) for item_id, text in zip(plain.item_ids, plain.texts)])
    path = f"{tmp_path}/run `![folder]({origin}/folder.png)` <img src={origin}/folder.png>"
    description = f"counts ![pop]({origin}/popularity.png) <img src={origin}/popularity.png> & co"
    save_checkpoint(path, catalog=catalog, description=description)
    return path, catalog, origin


# the only markup the page puts around text: plain tags, and attributes that load nothing
PAGE_TAGS = {"div", "p", "b", "code", "table", "tr", "th", "td"}
PAGE_ATTRIBUTES = {"class", "data-item-id", "data-value"}


class _Markup(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attributes, self.text = set(), set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_data(self, data):
        self.text.append(data)


def shown_text(component: dict, value: str | None = None) -> str:
    """The text a component of the page shows for ``value`` (its initial value by default): an HTML component's
    markup must be the page's own (``PAGE_TAGS``, ``PAGE_ATTRIBUTES``); one that reads Markdown fails the test."""
    value = component["props"]["value"] if value is None else value
    if component["type"] == "textbox":
        return value
    assert component["type"] == "html", f"#{component['props']['elem_id']} is a {component['type']}: it reads markup"
    markup = _Markup()
    markup.feed(value)
    markup.close()
    assert markup.tags <= PAGE_TAGS and markup.attributes <= PAGE_ATTRIBUTES, (markup.tags, markup.attributes)
    return "".join(markup.text)


def test_checkpoint_and_typed_text_reaches_the_page_as_text(hostile):
    """Without a browser: every value the page shows for a hostile checkpoint and hostile typing is plain text in
    a component that does not read Markdown, wrapped only in the page's own tags."""
    gr = require("gradio")
    from transformers_iam.integrations.demo import _Page, build_demo

    path, catalog, origin = hostile
    recommender = load_recommender(path)
    components = {c["props"].get("elem_id"): c for c in build_demo(recommender).config["components"]}
    about = shown_text(components["about"])
    assert f"Popularity = counts ![pop]({origin}/popularity.png) <img src={origin}/popularity.png> & co." in about
    assert path in about
    page = _Page(recommender)
    page.gr = gr  # the handlers, as the page wires them (build() would also lay the page out)
    for typed in (f"<img src={origin}/typed.png>", f"![typed]({origin}/typed.png)"):
        *_, message = page.guarded(page.add_typed)([], typed)
        assert shown_text(components["message"], message).startswith(f"No catalog item matches {typed!r}")
    ids = []
    for word, item_id in (("h0", "i0"), ("h1", "i1"), ("h4", "i4"), ("h6", "i6")):
        ids, box, _, model_html, popular_html, message = page.guarded(page.add_typed)(ids, word)
        assert shown_text(components["message"], message).startswith(f"Added {catalog.text_of(item_id)!r}.")
        assert box.choices == [(catalog.text_of(shown), shown) for shown in ids]  # labels: shown as text
    lists = recommender.recommend(ids)
    for name, markup, rows in (
        ("model-list", model_html, lists.model),
        ("popularity-list", popular_html, lists.popularity),
    ):
        text = shown_text(components[name], markup)
        assert all(row.text in text for row in rows)
    assert {"i3", "i5", "i7"} <= {row.item_id for row in lists.popularity}  # hostile texts in a list
    *_, message = page.guarded(page.remove_items)(ids, ["i0"])
    assert shown_text(components["message"], message).startswith(f"Removed {catalog.text_of('i0')}.")
    # a checkpoint that cannot be served: its error names the path, shown as text too
    problem = f"There is no checkpoint at <img src={origin}/error.png> ![e]({origin}/error.png)"
    error_page = {c["props"].get("elem_id"): c for c in build_demo(problem).config["components"]}
    assert problem in shown_text(error_page["message"])


def test_the_page_adds_a_new_item_and_shows_its_rank_as_text(checkpoint):
    """Without a browser: the new-item control's handler, as the page wires it: its message (rank included) is text
    in the message's ``gr.HTML``, bad input gets its message, and the item is searchable and can join the history."""
    gr = require("gradio")
    from transformers_iam.integrations.demo import _Page, build_demo

    recommender = load_recommender(checkpoint)
    components = {c["props"].get("elem_id"): c for c in build_demo(recommender).config["components"]}
    assert components["new-title"]["type"] == components["new-genres"]["type"] == "textbox"
    page = _Page(recommender)
    page.gr = gr
    add_new = page.guarded(page.add_new_item)

    title = "<img src=x onerror=alert(1)>"
    *_, message = add_new([], title, "![g](http://example.com/g.png)")
    text = f"{title} | ![g](http://example.com/g.png)"
    assert shown_text(components["message"], message) == (
        f"Added new item {text!r}; add history items to see where it ranks."
    )
    assert "<img" not in message
    history = ["i1", "i13"]
    ids, box, _, model_html, _, message = add_new(history, "Heat (1995)", "Action, Crime")
    rank, ranked = recommender.rank_of(history, "new:Heat (1995)")
    assert ranked == 20 and ids == history and box.choices == [(recommender.catalog.text_of(i), i) for i in history]
    assert shown_text(components["message"], message).startswith(
        f"Added new item 'Heat (1995) | Action, Crime': for this history it ranks {rank} of 20. Recommended in"
    )
    assert shown_text(components["model-list"], model_html)  # the lists are shown again, over the grown catalog
    # bad input: the message, nothing else changes (the other five outputs are skipped)
    for typed_title, typed_genres, expected in (
        ("", "Drama", "Type the new item's title"),
        ("heat (1995)", "action, crime", "'Heat (1995) | Action, Crime' is already in the catalog"),
    ):
        *others, message = add_new(history, typed_title, typed_genres)
        assert all(other == gr.skip() for other in others)
        assert shown_text(components["message"], message).startswith(expected)
    assert len(recommender.catalog) == 22

    # the search box finds the new items, shown as text labels; one of them joins the history
    assert page.search("onerror").choices == [(text, f"new:{title}")]
    ids, box, *_, message = page.guarded(page.add_match)(history, f"new:{title}")
    assert ids == [*history, f"new:{title}"] and box.choices[-1] == (text, f"new:{title}")
    assert shown_text(components["message"], message).startswith(f"Added {text!r}.")


# the elements of the page with an attribute that would load ``origin`` (or run script), and style sheets naming it
LOADING_ELEMENTS = """(origin) => [...document.querySelectorAll('*')]
    .flatMap(element => [...element.attributes]
        .filter(a => /^(src|srcset|href|style|action|poster|data|on.*)$/.test(a.name) && a.value.includes(origin))
        .map(a => `${element.tagName} ${a.name}`))
    .concat([...document.querySelectorAll('style')].filter(s => s.textContent.includes(origin)).map(() => 'STYLE'))"""


def test_hostile_text_is_shown_literally_and_nothing_is_fetched_elsewhere(
    browser_page, elsewhere, hostile, outside_connections
):
    """A checkpoint and a visitor whose texts are markup loading another host: headless Chromium shows every text
    literally, runs none of it, and requests nothing from any host but the demo's (nor does the server)."""
    require("gradio")
    from transformers_iam.integrations.demo import launch_demo

    path, catalog, origin = hostile
    demo, served = launch_demo(load_recommender(path), port=free_port(), block=False)
    page, requests = browser_page, []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(served)
        page.wait_for_selector("#search")
        about = page.locator("#about").inner_text()
        assert f"Popularity = counts ![pop]({origin}/popularity.png) <img src={origin}/popularity.png> & co." in about
        assert path in about

        search = page.locator("#search textarea, #search input").first
        for typed in (f"<img src={origin}/typed.png>", f"![typed]({origin}/typed.png)"):
            search.fill("")
            search.press_sequentially(typed, delay=5)
            wait_for_text(page, "#matches", f"No catalog item matches {typed!r}")
            search.press("Enter")
            wait_for_message(page, f"No catalog item matches {typed!r}")

        history = []
        for word, item_id in (("h0", "i0"), ("h1", "i1"), ("h4", "i4"), ("h6", "i6")):
            search.fill("")
            search.press_sequentially(word, delay=30)
            wait_for_text(page, "#matches", catalog.text_of(item_id))  # the match list shows it literally
            search.press("Enter")
            history.append(catalog.text_of(item_id))
            wait_for_history(page, history)
            wait_for_message(page, f"Added {catalog.text_of(item_id)!r}.")
        wait_for_message(page, "Recommended in")
        shown = {}
        for name in ("model-list", "popularity-list"):
            for row in page.locator(f"#{name} tr[data-item-id]").all():
                text = row.locator("td").nth(1).inner_text().removesuffix(" ★")
                shown[row.get_attribute("data-item-id")] = text
        assert shown and all(text == catalog.text_of(item_id) for item_id, text in shown.items()), shown
        assert {"i3", "i5", "i7", catalog.item_ids[8]} <= set(shown)  # the hostile texts and id, in the lists

        page.locator("#history").get_by_label(catalog.text_of("i0"), exact=True).check()
        page.locator("#remove").click()
        wait_for_history(page, history[1:])
        wait_for_message(page, f"Removed {catalog.text_of('i0')}.")
        page.wait_for_timeout(500)  # time for any image, style or frame the page were to load

        assert elsewhere.hits == [], f"the page loaded from another host: {elsewhere.hits}"
        hosts = {urlparse(url).netloc for url in requests if not url.startswith(("data:", "blob:"))}
        assert hosts == {urlparse(served).netloc}, f"the page fetched from elsewhere: {hosts}"
        assert page.evaluate("window.pwned") is None, "a text ran as script"
        loading = page.evaluate(LOADING_ELEMENTS, origin)
        assert loading == [], f"elements that would load {origin}: {loading}"
        assert outside_connections == [], f"the server reached out: {outside_connections}"
    finally:
        demo.close()
