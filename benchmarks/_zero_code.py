"""The zero-code variants: the bare client or app, made and served while ``meshprop.instrument()``
is on.

``instrument()`` patches classes, not one client or app, so it is switched on only around the
variant's own build and batches (``Variant.around``) and undone after each: the bare variant
beside it stays bare.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import meshprop
from meshprop import _instrument


@contextmanager
def instrumented() -> Iterator[None]:
    """``instrument()`` for the duration of the block, ``uninstrument()`` after it.

    A process instrumented already (a benchmark started under ``meshprop-run``) would patch the
    bare variants too and make every comparison meaningless, so it is refused instead.
    """
    if _instrument.is_instrumented():
        raise RuntimeError("the process is instrumented already: every variant would be patched")
    meshprop.instrument()
    try:
        yield
    finally:
        meshprop.uninstrument()
