"""Fixtures shared by every test module, in tests/ and integrations/ alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshprop._plan import use_fast_path
from meshprop._snapshot import CURRENT

# The shared assertion helpers report like the tests' own asserts: the values, not just a line.
pytest.register_assert_rewrite("integrations._assertions", "tests.logging_scenarios")


@pytest.fixture(autouse=True)
def no_leaked_context() -> Iterator[None]:
    """Every test starts and ends outside a request: the test process itself never serves one,
    so a snapshot left behind is a leak."""
    assert CURRENT.get() is None, "a previous test leaked a snapshot into this context"
    yield
    assert CURRENT.get() is None, "this test left a snapshot in the context"


@pytest.fixture(params=["fast path", "general path"])
def capture_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test twice: with the fast matcher, and with the general path alone
    (``MESHPROP_FAST_PATH=0``), which must give the same answers."""
    use_fast_path(request.param == "fast path")
    try:
        yield request.param
    finally:
        use_fast_path(True)
