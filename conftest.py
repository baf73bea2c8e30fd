"""The namespace of the library's docstring examples (``--doctest-modules`` collects them from ``src/``): a tiny model,
catalog, tokenizer and collator, saved checkpoints, data and a folder of the example's own, built only for doctests
(``tests/testing_utils.py``: ``doctest_objects``)."""

from __future__ import annotations

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_objects(request):
    if isinstance(request.node, DoctestItem):
        from tests.testing_utils import doctest_objects

        tmp = request.getfixturevalue("tmp_path")  # the example's own empty folder, for the files it writes
        request.getfixturevalue("doctest_namespace").update(doctest_objects(tmp))
