"""The patches ``instrument()`` applies: for each library, the attribute and the adapter
function that builds its replacement. The adapters' modules are imported only once their
library has been imported, so this table imports no framework."""

from __future__ import annotations

import contextvars
import functools
import importlib
from collections.abc import Callable
from typing import Any

from ._instrument import Patch, register


def _from(adapter: str, builder: str) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        return getattr(importlib.import_module(f"meshprop.{adapter}"), builder)(original)

    return make


def _thread_start(original: Callable[..., None]) -> Callable[..., None]:
    """``Thread.start`` that runs the thread in a copy of the starter's context."""

    def start(self: Any) -> None:
        self.run = functools.partial(contextvars.copy_context().run, self.run)
        original(self)

    return start


def _executor_submit(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Executor.submit`` that runs the call in a copy of the submitter's context (and so
    ``loop.run_in_executor`` too, which submits to a ``ThreadPoolExecutor``)."""

    def submit(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return original(self, contextvars.copy_context().run, fn, *args, **kwargs)

    return submit


register(
    [
        Patch("threading", "Thread", "start", _thread_start),
        Patch("concurrent.futures.thread", "ThreadPoolExecutor", "submit", _executor_submit),
        Patch("http.client", "HTTPConnection", "putrequest", _from("_http_client", "putrequest")),
        Patch("http.client", "HTTPConnection", "putheader", _from("_http_client", "putheader")),
        Patch("http.client", "HTTPConnection", "endheaders", _from("_http_client", "endheaders")),
        Patch("http.client", "HTTPConnection", "getresponse", _from("_http_client", "getresponse")),
        *(
            Patch("requests", "Session", name, _from("requests", f"patched_{name}"))
            for name in ("prepare_request", "send", "rebuild_auth")
        ),
        Patch("httpx", "Client", "send", _from("httpx", "patched_send")),
        Patch("httpx", "AsyncClient", "send", _from("httpx", "patched_async_send")),
        Patch("aiohttp", "ClientRequest", "send", _from("aiohttp", "patched_send")),
        Patch("aiohttp", "ClientResponse", "start", _from("aiohttp", "patched_start")),
        Patch("aiohttp.web", "Application", "__init__", _from("aiohttp", "patched_app_init")),
        *(
            Patch(module, owner, "build_middleware_stack", _from("asgi", "patched_build_stack"))
            for module, owner in (
                ("starlette.applications", "Starlette"),
                ("fastapi.applications", "FastAPI"),  # which builds its own stack
            )
        ),
        Patch("flask.app", "Flask", "wsgi_app", _from("wsgi", "patched_flask_wsgi_app")),
        Patch(
            "django.core.handlers.base",
            "BaseHandler",
            "load_middleware",
            _from("django", "patched_load_middleware"),
        ),
    ]
)
