"""Zero code: ``instrument()`` patches the frameworks and clients of the process, and
``uninstrument()`` puts every patched attribute back as it was.

Each patch names a module, a class in it and one of its attributes, and builds the replacement
from the original. A module already imported is patched at once; one imported later is patched
right after it runs (a finder on ``sys.meta_path``). A library that is missing is skipped, and
one whose class or attribute is not where the patch expects is left alone: the app starts
either way. The replacements read the plan at call time, so they cost nothing to re-point.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ._config import Config
from ._plan import Plan, plan_for

_log = logging.getLogger("meshprop")

#: Marks a replacement, so a second patch of the same attribute is never stacked on it.
PATCHED = "__meshprop_patched__"

Make = Callable[[Any], Any]


@dataclass(frozen=True)
class Patch:
    """Replace ``module.owner.attribute`` with ``make(original)``."""

    module: str
    owner: str
    attribute: str
    make: Make


class _Applied:
    __slots__ = ("attribute", "had_own", "original", "owner")

    def __init__(self, owner: Any, attribute: str, original: Any, had_own: bool) -> None:
        self.owner = owner
        self.attribute = attribute
        self.original = original
        self.had_own = had_own


_lock = threading.RLock()
_patches: list[Patch] = []
_applied: list[_Applied] = []
_waiting: dict[str, list[Patch]] = {}
_plan: Plan | None = None
_finder: _PatchOnImport | None = None


def register(patches: Sequence[Patch]) -> None:
    """Add patches to what ``instrument()`` applies (the adapters' modules call this)."""
    with _lock:
        _patches.extend(patches)


def active_plan() -> Plan | None:
    """The plan the patches follow, or None while the process is not instrumented."""
    return _plan


def instrument(config: Config | None = None) -> None:
    """Patch every supported framework and client, imported now or later. Idempotent and
    thread-safe; a second call with another Config re-points the patches at it."""
    global _plan, _finder
    from . import _patches as _  # noqa: F401  (registers the built-in patches)

    with _lock:
        plan = plan_for(config)
        if _plan is not None:
            _plan = plan
            return
        _plan = plan
        for patch in _patches:
            module = sys.modules.get(patch.module)
            if module is None:
                _waiting.setdefault(patch.module, []).append(patch)
            else:
                _apply(patch, module)
        if _waiting:
            _finder = _PatchOnImport()
            sys.meta_path.insert(0, _finder)


def uninstrument() -> None:
    """Undo ``instrument()``: every patched attribute back exactly as it was."""
    global _plan, _finder
    with _lock:
        if _finder is not None:
            if _finder in sys.meta_path:
                sys.meta_path.remove(_finder)
            _finder = None
        _waiting.clear()
        _ready.clear()
        for applied in reversed(_applied):
            if applied.had_own:
                setattr(applied.owner, applied.attribute, applied.original)
            else:
                delattr(applied.owner, applied.attribute)
        _applied.clear()
        _plan = None


def is_instrumented() -> bool:
    return _plan is not None


def _apply(patch: Patch, module: ModuleType) -> None:
    owner: Any = module
    for part in patch.owner.split(".") if patch.owner else ():
        owner = getattr(owner, part, None)
        if owner is None:
            _log.info("meshprop: %s.%s not found; not patched", patch.module, patch.owner)
            return
    original = getattr(owner, patch.attribute, None)
    if original is None or getattr(original, PATCHED, False):
        return
    try:
        replacement = patch.make(original)
        setattr(replacement, PATCHED, True)
        had_own = patch.attribute in vars(owner)
        setattr(owner, patch.attribute, replacement)
    except Exception:  # a library we do not know: leave it as it is
        _log.warning("meshprop: could not patch %s.%s", patch.module, patch.owner, exc_info=True)
        return
    _applied.append(_Applied(owner, patch.attribute, original, had_own))


_ready: list[Patch] = []
_applying = False


def _module_ran(name: str) -> None:
    """Apply the patches that waited for ``name``. Building a replacement imports its adapter,
    which may import more of the library and so come back here: those patches wait until the
    outer ones are done, so no adapter is used half-imported."""
    global _applying
    with _lock:
        _ready.extend(_waiting.pop(name, ()))
        if _applying:
            return
        _applying = True
        try:
            while _ready:
                patch = _ready.pop(0)
                module = sys.modules.get(patch.module)
                if module is not None and _plan is not None:
                    _apply(patch, module)
        finally:
            _applying = False


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a module a patch waits for, it wraps the real loader so the
    patch is applied as soon as the module has run."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _waiting:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        spec.loader = _Loader(loader, fullname)
        return spec


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        create: Callable[..., ModuleType | None] | None = getattr(
            self._loader, "create_module", None
        )
        return None if create is None else create(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _module_ran(self._name)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)
