"""meshprop's benchmarks: per-request overhead against a bare app and the alternatives.

Every suite measures its variants in one run, interleaved round by round, and reports each
against the bare case measured alongside it; see ``python -m benchmarks --help``.
"""
