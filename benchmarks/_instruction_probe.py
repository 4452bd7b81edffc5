"""One variant of one suite, run a given number of times: what ``benchmarks.instructions`` runs
under callgrind.

``python -m benchmarks._instruction_probe SUITE VARIANT CALLS``: builds the variant exactly as
the timing run does, warms it up, then makes CALLS more requests (none for the baseline run).
The collector is off, so the count does not depend on when a collection happens to fall. What
a variant switches on for the process (``instrument()``) stays on for the whole probe, in the
baseline run as in the measured one, so it cancels out.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from contextlib import ExitStack

from ._run import _variants

WARM_UP_CALLS = 20


def run(suite: str, variant_name: str, calls: int) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with ExitStack() as stack:
        variants = {variant.name: variant for variant in _variants(suite, stack, loop)}
        variant = variants[variant_name]
        with variant.around():
            batch = variant.build()
            batch(WARM_UP_CALLS)
            gc.collect()
            gc.disable()
            if calls:
                batch(calls)
            gc.enable()
    loop.close()


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]))
