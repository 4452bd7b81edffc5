"""``meshprop-run CMD [ARGS...]``: run CMD with ``meshprop.instrument()`` done before the app
is imported, configured only by ``MESHPROP_*`` variables, the way ``opentelemetry-instrument``
works: a ``sitecustomize`` on ``PYTHONPATH`` (kept in front of any the process already has)
instruments every Python process CMD starts, gunicorn's workers included.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from ._config import Config

BOOTSTRAP = Path(__file__).parent / "_bootstrap"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: meshprop-run CMD [ARGS...]   (configured by MESHPROP_* variables)")
        return 0 if args else 2
    try:
        Config.from_env()  # a bad setting fails here, before CMD starts
    except (TypeError, ValueError) as error:
        print(f"meshprop-run: {error}", file=sys.stderr)
        return 2
    executable = shutil.which(args[0])
    if executable is None:
        print(f"meshprop-run: {args[0]}: command not found", file=sys.stderr)
        return 127
    paths = [str(BOOTSTRAP), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    os.execv(executable, args)
    return 0  # not reached
