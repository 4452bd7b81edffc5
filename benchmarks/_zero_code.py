"""The zero-code variants: the bare client or app, made and served while ``meshprop.instrument()``
is on.

``instrument()`` patches classes, not one client or app, so it is switched on only around the
variant's own build and batches (``Variant.around``) and undone after each: the bare variant
beside it stays bare.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import meshprop
from meshprop import _instrument


@contextmanager
def instrumented(adapter: str | None = None) -> Iterator[None]:
    """``instrument()`` for the duration of the block, ``uninstrument()`` after it.

    ``adapter`` (the meshprop module whose patch the variant relies on) is imported first:
    ``instrument()`` leaves a library it cannot patch alone, so a missing adapter would show
    only as a variant that does not forward, where the harness should report it missing.
    A process instrumented already (a benchmark started under ``meshprop-run``) would patch the
    bare variants too and make every comparison meaningless, so it is refused instead.
    """
    if adapter is not None:
        importlib.import_module(adapter)
    if _instrument.is_instrumented():
        raise RuntimeError("the process is instrumented already: every variant would be patched")
    meshprop.instrument()
    try:
        yield
    finally:
        meshprop.uninstrument()


def around(adapter: str) -> Callable[[], AbstractContextManager[None]]:
    """A zero-code variant's ``Variant.around``, relying on ``adapter``'s patch."""
    return functools.partial(instrumented, adapter)
