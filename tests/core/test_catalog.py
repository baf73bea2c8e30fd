"""ItemCatalog: ids, the fingerprint a checkpoint records, and files that are refused with their path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transformers_iam import ItemCatalog
from transformers_iam.core.catalog import catalog_fingerprint


def test_int_ids_are_their_text_and_other_types_are_refused():
    assert ItemCatalog([5, np.int64(7)], ["a", "b"]).item_ids == ["5", "7"]
    for bad, kind in [(1.0, "float"), (None, "NoneType"), (True, "bool"), (("a",), "tuple")]:
        with pytest.raises(ValueError, match=rf"item_ids\[1\] = .* \({kind}\); item ids must be strings"):
            ItemCatalog(["x", bad], ["a", "b"])
    with pytest.raises(ValueError, match=r"item_ids\[0\] is an empty string"):
        ItemCatalog([" "], ["a"])
    with pytest.raises(ValueError, match="not a single string"):
        ItemCatalog("abc", ["a", "b", "c"])


def test_fingerprint_follows_ids_and_their_order_not_texts():
    catalog = ItemCatalog(["1", "2", "3"], ["a", "b", "c"])
    assert catalog.fingerprint == ItemCatalog([1, 2, 3], ["x", "y", "z"]).fingerprint
    assert catalog.fingerprint != ItemCatalog(["1", "3", "2"], ["a", "c", "b"]).fingerprint
    assert catalog.fingerprint != ItemCatalog(["1", "2"], ["a", "b"]).fingerprint
    # no separator ambiguity: ["1", "23"] and ["12", "3"] differ
    assert catalog_fingerprint(["1", "23"]) != catalog_fingerprint(["12", "3"])


def test_save_leaves_no_temporary_file_and_round_trips(tmp_path):
    catalog = ItemCatalog(["1", "2"], ["Toy Story (1995)", "Amélie (2001)"])
    catalog.save(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["item_catalog.json"]  # no temporary file left
    assert ItemCatalog.load(tmp_path) == catalog


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"items": [{"index": 0, "item_id": "1", "te', r"item_catalog\.json:1:\d+: not a valid item catalog"),
        ("[1, 2]", r'item_catalog\.json: not a valid item catalog: expected \{"items"'),
        ('{"items": [{"index": 0, "item_id": 1, "text": "a"}]}', r"record 0 has item_id 1; expected a string"),
        ('{"items": [{"index": 1, "item_id": "1", "text": "a"}]}', r"record 0 has index 1, expected 0"),
        ('{"items": [{"index": 0, "item_id": "1"}]}', r"record 0 must be an object with index, item_id and text"),
        ('{"items": [{"index": 0, "item_id": "1", "text": ""}]}', r"item_catalog\.json: item '1' has an empty text"),
    ],
)
def test_corrupt_files_are_named(tmp_path, content, message):
    (tmp_path / "item_catalog.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        ItemCatalog.load(tmp_path)


def test_non_utf8_file_is_named(tmp_path):
    (tmp_path / "item_catalog.json").write_bytes(json.dumps({"items": []}).encode("utf-16"))
    with pytest.raises(ValueError, match=r"item_catalog\.json.*not a valid item catalog"):
        ItemCatalog.load(tmp_path)
