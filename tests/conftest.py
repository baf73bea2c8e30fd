"""Fixtures shared by every test module; the helpers behind them live in `tests/testing_utils.py`."""

from __future__ import annotations

import pytest

from .testing_utils import catalog_tokenizer, synthetic_catalog


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs the real LLM or several processes (deselect with -m 'not slow')")


@pytest.fixture
def catalog():
    return synthetic_catalog()


@pytest.fixture
def tokenizer(catalog):
    return catalog_tokenizer(catalog)
