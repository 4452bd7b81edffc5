"""The package's promises about imports: ``import meshprop`` needs no framework, and a missing
extra says what to install.

Each check runs in a fresh interpreter, so what this test process already imported cannot hide
an import the package makes by itself.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = ("starlette", "fastapi", "flask", "werkzeug", "httpx", "requests", "aiohttp")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("statement", ["import meshprop", "from meshprop import *"])
def test_the_core_imports_no_framework(statement: str) -> None:
    code = (
        f"import sys; {statement}; "
        f"print(','.join(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)))"
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
