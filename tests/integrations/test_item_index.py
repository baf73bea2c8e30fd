"""ItemIndex (integrations/item_index.py): a faiss index over the adapter's rows that finds the model's own top-k
(exactly, or at a measured recall), bound to its catalog and rows, with a clear error when faiss is missing."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from transformers import pipeline

from transformers_iam import IAMDataCollator, ItemCatalog
from transformers_iam.core.ranking import chunked_topk
from transformers_iam.integrations import item_index
from transformers_iam.integrations.item_index import ItemIndex, default_nlist

from ..testing_utils import SEGMENTS, collator_kwargs, random_ids, tiny_model

requires_faiss = pytest.mark.skipif(
    importlib.util.find_spec("faiss") is None,
    reason="needs faiss, not installed here: install it with pip install 'transformers-iam[serve]'",
)


@pytest.fixture
def model(catalog):
    model = tiny_model(num_items=len(catalog))
    model.set_catalog(catalog)
    torch.manual_seed(3)  # rows apart enough that no two items tie
    with torch.no_grad():
        model.adapter.item_embeddings.weight.normal_()
        model.adapter.item_embeddings.bias.normal_()
    return model


def users_of(model):
    ids, segments = torch.cat([random_ids(), random_ids(seed=2)]), SEGMENTS.repeat(2, 1)
    return {"input_ids": ids, "item_segment_ids": segments}


def scores_of(rows: list[dict]) -> torch.Tensor:
    return torch.tensor([row["score"] for row in rows])  # float32: compared at float32's tolerance


def clustered_rows(num_items=6000, dim=32, users=100, seed=0):
    """Rows around 60 directions, biases like log-popularities; users near one direction, of LayerNorm's norm."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(60, dim, generator=generator), dim=1)
    near = lambda picked, spread: torch.nn.functional.normalize(  # noqa: E731
        centres[picked] + spread * torch.randn(len(picked), dim, generator=generator) / math.sqrt(dim), dim=1
    )
    weight = near(torch.randint(0, 60, (num_items,), generator=generator), 0.8) * 0.2
    bias = torch.log(torch.rand(num_items, generator=generator).clamp(min=1e-6)) / 3
    states = near(torch.randint(0, 60, (users,), generator=generator), 1.0) * math.sqrt(dim)
    return states, weight, bias


@requires_faiss
@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_the_index_finds_the_models_top_k(model, kind):
    batch = users_of(model)
    exclusions = [[0, 1, 2], [19, -1, -1]]
    index = ItemIndex.from_model(model, kind=kind, nlist=2, nprobe=2)  # every group scanned: ivf is exact too
    scores, indices = index.search(model.user_states(**batch), k=5, exclude=exclusions)
    expected = model.recommend(**batch, k=5, exclude_item_ids=exclusions)
    assert torch.equal(indices, expected.indices)
    torch.testing.assert_close(scores, expected.scores)
    everything = index.search(model.user_states(**batch), k=17, exclude=exclusions)[1]
    assert torch.equal(everything, model.recommend(**batch, k=17, exclude_item_ids=exclusions).indices)
    with pytest.raises(ValueError, match="k=18 but user 0 has only 17 items left"):
        index.search(model.user_states(**batch), k=18, exclude=exclusions)


@requires_faiss
def test_the_approximate_index_recalls_the_exact_top_10():
    states, weight, bias = clustered_rows()
    exact = chunked_topk(states, weight, bias, 10)[1]
    index = ItemIndex.build(weight, bias, kind="ivf", nprobe=8)
    assert index.index.nlist == default_nlist(6000) == 77
    found = index.search(states, 10)[1]
    recall = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), exact.tolist())) / exact.numel()
    assert recall >= 0.95
    index.nprobe = 1
    scanned_less = index.search(states, 10)[1]
    assert sum(len(set(a) & set(b)) for a, b in zip(scanned_less.tolist(), exact.tolist())) / exact.numel() < recall
    excluded = exact[:, :3].tolist()  # each user's best three, excluded: never returned, and the list still full
    scores, indices = ItemIndex.build(weight, bias, kind="exact").search(states, 10, exclude=excluded)
    assert torch.equal(indices, chunked_topk(states, weight, bias, 10, excluded)[1]) and (indices >= 0).all()


@requires_faiss
def test_an_ivf_index_that_finds_too_few_pads_the_list():
    states, weight, bias = clustered_rows(num_items=400, users=4)
    index = ItemIndex.build(weight, bias, kind="ivf", nlist=10, nprobe=1)
    scores, indices = index.search(states, 200)  # more than one group holds
    missing = indices == -1
    assert missing.any() and torch.equal(missing, scores == float("-inf"))
    assert (scores[:, :-1] >= scores[:, 1:]).all()


@requires_faiss
def test_save_and_load_beside_the_checkpoint(model, tmp_path):
    batch = users_of(model)
    index = ItemIndex.from_model(model, kind="ivf", nlist=3, nprobe=2)
    path = index.save(tmp_path)
    metadata = json.loads(open(path, encoding="utf-8").read())
    assert metadata["catalog_fingerprint"] == model.config.catalog_fingerprint and metadata["nprobe"] == 2
    loaded = ItemIndex.load(tmp_path, model)
    assert loaded.kind == "ivf" and loaded.nprobe == 2
    states = model.user_states(**batch)
    assert torch.equal(loaded.search(states, 5)[1], index.search(states, 5)[1])
    ItemIndex.from_model(model, kind="exact").save(tmp_path)  # replaces it: one faiss file left
    assert sorted(name.endswith(".faiss") for name in os.listdir(tmp_path)) == [False, True]
    assert ItemIndex.load(tmp_path, model).kind == "exact"


@requires_faiss
def test_a_crafted_index_file_name_is_neither_read_nor_deleted(model, tmp_path):
    outside = tmp_path / "keep.txt"
    outside.write_text("not an index")
    folder = tmp_path / "index"
    path = ItemIndex.from_model(model, kind="exact").save(folder)
    metadata = json.loads(open(path, encoding="utf-8").read())
    metadata["index_file"] = "../keep.txt"
    open(path, "w", encoding="utf-8").write(json.dumps(metadata))
    with pytest.raises(ValueError, match=r"index_file '../keep.txt' is not a name ItemIndex.save writes"):
        ItemIndex.load(folder, model)
    ItemIndex.from_model(model, kind="exact").save(folder)  # would have removed the file the metadata named
    assert outside.read_text() == "not an index"


@requires_faiss
def test_a_stale_index_is_refused(model, tmp_path, catalog):
    ItemIndex.from_model(model, kind="exact").save(tmp_path)
    other = tiny_model(num_items=len(catalog))
    other.set_catalog(ItemCatalog([f"x{index}" for index in range(len(catalog))], catalog.texts))
    with pytest.raises(ValueError, match="built for another catalog"):
        ItemIndex.load(tmp_path, other)
    with torch.no_grad():
        model.adapter.item_embeddings.weight.mul_(1.01)  # trained further: same catalog, other rows
    with pytest.raises(ValueError, match="other adapter rows"):
        ItemIndex.load(tmp_path, model)
    with pytest.raises(FileNotFoundError, match="has no item_index.json"):
        ItemIndex.load(tmp_path / "nowhere", model)
    unbound = tiny_model(num_items=len(catalog))  # no catalog: nothing to bind a saved index to
    with pytest.raises(ValueError, match="bound to no catalog"):
        ItemIndex.from_model(unbound, kind="exact").save(tmp_path / "unbound")


@requires_faiss
def test_the_pipeline_serves_an_attached_index_and_refuses_it_once_stale(model, tmp_path, tokenizer, catalog):
    model.save_pretrained(tmp_path)
    IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs()).save_pretrained(tmp_path)
    recommender = pipeline("item-recommendation", model=str(tmp_path))
    history = {"history": ["i3", "i7", "i5"]}
    expected = recommender(history, top_k=5), recommender(history, top_k=20)
    ItemIndex.from_model(recommender.model, kind="exact").attach(recommender)
    served = recommender(history, top_k=5), recommender(history, top_k=20)
    for got, want in zip(served, expected):
        assert [row["index"] for row in got] == [row["index"] for row in want]
        torch.testing.assert_close(scores_of(got), scores_of(want))
    assert len(served[1]) == 17
    recommender.model.add_items(["n1"], ["w3_0 w5_0"], IAMDataCollator.from_pretrained(tmp_path))
    with pytest.raises(ValueError, match="built for another catalog"):
        recommender(history, top_k=5)
    recommender.item_index = None  # detached: the model's own ranking again
    assert len(recommender(history, top_k=5)) == 5


@requires_faiss
def test_search_checks_its_arguments(model):
    index = ItemIndex.from_model(model, kind="exact")
    states = model.user_states(**users_of(model))
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 20\]"):
        index.search(states, 21)
    with pytest.raises(ValueError, match="user_states have 31 features, the index's rows 32"):
        index.search(states[:, :-1], 5)
    with pytest.raises(ValueError, match="exclude: user 1 has 20"):
        index.search(states, 5, exclude=[[], [20]])
    with pytest.raises(ValueError, match="nprobe is an option of kind='ivf' only"):
        index.nprobe = 3
    with pytest.raises(ValueError, match="kind must be one of"):
        ItemIndex.from_model(model, kind="hnsw")


def test_without_faiss_the_error_names_the_extra(monkeypatch, model):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'transformers-iam\[serve\]'"):
        ItemIndex.from_model(model, kind="exact")
    with pytest.raises(ImportError, match="faiss-cpu"):
        item_index.import_faiss()


@requires_faiss
def test_the_benchmark_runs_in_its_quick_mode(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    json_out = tmp_path / "item_index.json"
    child = subprocess.run(
        [sys.executable, os.path.join(root, "benchmarks", "item_index.py"), "--quick", "--json-out", str(json_out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.path.join(root, "src")},
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert "| items | method | build s | index memory MB | p50 ms | p99 ms | recall@10 |" in child.stdout
    rows = json.loads(json_out.read_text())["rows"]
    assert {row["method"].split(" (")[0].split(",")[0] for row in rows} >= {"exact", "faiss exact", "faiss IVF-flat"}
    assert all(row["recall@10"] == 1.0 for row in rows if row["method"].startswith("exact"))
