# Every target works on a fresh clone: the first one run creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

# The core tests also run on the oldest and newest supported Pythons (pyenv has them here).
CORE_TESTS := tests/test_headers.py tests/test_capture.py tests/test_snapshot.py \
	tests/test_config.py tests/test_scope.py tests/test_outbound.py tests/test_vectors.py \
	tests/test_fast_path.py tests/test_package.py tests/test_inject.py tests/test_deadline.py

.PHONY: demo test lint typecheck check test-versions bench bench-quick bench-instructions clean sidecar \
	stress stress-ci redis

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m integrations.demo

test: $(STAMP) sidecar redis
	$(PY) -m pytest

# The integration suite puts a real nginx in front of the first service, as the sidecar.
sidecar:
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then \
		echo "installing nginx, the integration suite's sidecar, with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	fi

# The Celery tests run real workers on a real Redis broker; each test run starts its own server.
redis:
	@if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then \
		echo "installing redis-server, the Celery tests' broker, with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	fi

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

check: lint typecheck test

test-versions:
	@set -e; for version in 3.10 3.13; do \
		interpreter="$$(pyenv prefix $$version)/bin/python"; \
		venv=".venv-$$version"; \
		[ -x "$$venv/bin/python" ] || "$$interpreter" -m venv "$$venv"; \
		"$$venv/bin/python" -m pip install --quiet --upgrade pip; \
		"$$venv/bin/python" -m pip install --quiet -e . pytest pytest-asyncio pytest-timeout hypothesis multidict; \
		echo "== core tests on Python $$version"; \
		"$$venv/bin/python" -m pytest -p no:cacheprovider $(CORE_TESTS); \
	done

# The stress harness (not part of `make test`): real servers under hostile and heavy traffic on
# 127.0.0.1. STRESS_BUDGET=ci bounds it to the CI budget (under 4 minutes on 2 cores).
stress: $(STAMP)
	$(PY) -m stress

stress-ci: $(STAMP)
	STRESS_BUDGET=ci $(PY) -m stress

bench: $(STAMP)
	$(PY) -m benchmarks

bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick

bench-instructions: $(STAMP)
	command -v valgrind >/dev/null || apt-get install -y valgrind
	$(PY) -m benchmarks.instructions

clean:
	rm -rf $(VENV) .venv-3.10 .venv-3.13 .pytest_cache .mypy_cache .ruff_cache
