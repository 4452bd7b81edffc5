"""Importing an optional framework, with an error that says which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming ``pip install "meshprop[extra]"``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"meshprop.{extra} needs {module!r}, which is not installed: "
            f'pip install "meshprop[{extra}]"'
        ) from error
