"""The namespace of the library's docstring examples (``--doctest-modules`` collects them from ``src/``): a tiny model,
catalog, tokenizer and collator, built only for doctests (``tests/testing_utils.py``: ``doctest_objects``)."""

from __future__ import annotations

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_objects(request):
    if isinstance(request.node, DoctestItem):
        from tests.testing_utils import doctest_objects

        request.getfixturevalue("doctest_namespace").update(doctest_objects())
