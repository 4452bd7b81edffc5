"""The package's promises about imports: ``import meshprop`` needs no framework, and a missing
extra says what to install.

Each check runs in a fresh interpreter, so what this test process already imported cannot hide
an import the package makes by itself.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import meshprop

FRAMEWORKS = (
    "starlette",
    "fastapi",
    "flask",
    "werkzeug",
    "httpx",
    "requests",
    "aiohttp",
    "django",
    "grpc",
)
LOG_LIBRARIES = ("structlog", "loguru", "sentry_sdk")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("statement", ["import meshprop", "from meshprop import *"])
def test_the_core_imports_no_framework(statement: str) -> None:
    code = (
        f"import sys; {statement}; "
        f"print(','.join(sorted(m for m in {FRAMEWORKS + LOG_LIBRARIES!r} if m in sys.modules)))"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize(
    ("submodule", "framework", "extra"),
    [
        ("httpx", "httpx", "httpx"),
        ("requests", "requests", "requests"),
        ("aiohttp", "aiohttp", "aiohttp"),
        ("otel", "opentelemetry", "otel"),
        ("django", "django", "django"),
        ("structlog", "structlog", "structlog"),
        ("loguru", "loguru", "loguru"),
        ("sentry", "sentry_sdk", "sentry"),
        ("celery", "celery", "celery"),
        ("grpc", "grpc", "grpc"),
    ],
)
def test_a_missing_extra_names_the_install(submodule: str, framework: str, extra: str) -> None:
    # A None entry in sys.modules makes `import framework` fail as if it were not installed.
    code = f"import sys; sys.modules[{framework!r}] = None; import meshprop.{submodule}"
    result = run_python(code)
    assert result.returncode != 0
    assert f'pip install "meshprop[{extra}]"' in result.stderr


@pytest.mark.parametrize("adapter", ["asgi", "wsgi", "logging"])
def test_adapters_without_a_framework_import_alone(adapter: str) -> None:
    """ASGI and WSGI are protocols, not frameworks: their adapters need nothing installed."""
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in FRAMEWORKS)
    result = run_python(f"import sys; {blocked}; import meshprop.{adapter}")
    assert result.returncode == 0, result.stderr


# The private modules; ``_otel_bridge`` is OpenTelemetry's side (it needs OpenTelemetry, and
# only ``_tracing`` loads it), and ``_bootstrap`` is meshprop-run's start-up folder.
CORE = sorted(
    path.stem
    for path in Path(meshprop.__file__).parent.glob("_*.py")
    if path.stem not in ("__init__", "_otel_bridge")
)


@pytest.mark.parametrize("module", CORE)
def test_every_core_module_imports_alone(module: str) -> None:
    result = run_python(f"import meshprop.{module}")
    assert result.returncode == 0, result.stderr


def _imports_of(module: str) -> set[str]:
    """The meshprop modules ``module`` imports when it runs: module level, outside
    ``TYPE_CHECKING``, and inside functions too."""
    tree = ast.parse((Path(meshprop.__file__).parent / f"{module}.py").read_text())
    type_only = {
        id(node)
        for guard in ast.walk(tree)
        if isinstance(guard, ast.If) and "TYPE_CHECKING" in ast.unparse(guard.test)
        for node in ast.walk(guard)
    }
    return {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.level == 1
        and node.module is not None
        and id(node) not in type_only
    }


def test_the_core_imports_in_one_direction() -> None:
    """Settings -> plan -> engine: no import cycle among the core modules, not even one held
    together by an import inside a function."""
    graph = {module: _imports_of(module) & set(CORE) for module in CORE}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module not in done:
            for imported in graph[module]:
                visit(imported, (*path, module))
            done.add(module)

    for module in CORE:
        visit(module, ())
    assert not any("_otel_bridge" in _imports_of(module) for module in CORE)
