"""meshprop: trace-header propagation for Python services in an Istio / Envoy mesh.

Inbound adapters (``meshprop.asgi``, ``meshprop.wsgi``, ``meshprop.aiohttp``) capture the
propagation headers of each request; wrapped clients (``meshprop.httpx``, ``meshprop.requests``,
``meshprop.aiohttp``) forward them on every outbound call. The framework submodules are imported
on first use, so ``import meshprop`` needs no framework installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._capture import bind
from ._config import Config
from ._deadline import deadline
from ._inject import inject
from ._instrument import instrument, uninstrument
from ._outbound import outbound_headers
from ._snapshot import current, exception_request_id, request_id, span_id, trace_id, wrap

if TYPE_CHECKING:  # the submodules, for type checkers; at run time __getattr__ loads them
    from . import aiohttp as aiohttp
    from . import asgi as asgi
    from . import celery as celery
    from . import django as django
    from . import grpc as grpc
    from . import httpx as httpx
    from . import logging as logging
    from . import loguru as loguru
    from . import otel as otel
    from . import requests as requests
    from . import sentry as sentry
    from . import structlog as structlog
    from . import wsgi as wsgi

__all__ = [
    "Config",
    "bind",
    "current",
    "deadline",
    "exception_request_id",
    "inject",
    "instrument",
    "outbound_headers",
    "request_id",
    "span_id",
    "trace_id",
    "uninstrument",
    "wrap",
]
__version__ = "0.1.0"

_SUBMODULES = frozenset(
    {"aiohttp", "asgi", "celery", "django", "grpc", "httpx", "logging", "otel", "requests"}
    | {"wsgi", "loguru", "sentry", "structlog"}
)


def __getattr__(name: str) -> Any:
    # `meshprop.asgi.MeshPropMiddleware` works after a plain `import meshprop`; the submodules
    # stay out of __all__, so `from meshprop import *` never imports a framework.
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
