"""Fixtures shared by every test module, in tests/ and integrations/ alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshprop._snapshot import CURRENT


@pytest.fixture(autouse=True)
def no_leaked_context() -> Iterator[None]:
    """Every test starts and ends outside a request: the test process itself never serves one,
    so a snapshot left behind is a leak."""
    assert CURRENT.get() is None, "a previous test leaked a snapshot into this context"
    yield
    assert CURRENT.get() is None, "this test left a snapshot in the context"
