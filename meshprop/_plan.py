"""The compile step: a ``Config`` turned, once, into the plan the hot path reads.

Everything a request would otherwise work out again (which names to look for and in which
spellings, each header's rule and cap, the scope, the fast matcher) is decided here, once per
distinct Config (``plan_for`` is cached: Configs are hashable values).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

from . import _headers as h
from ._config import Config, compiled_scope, default_config, uuid4_request_id
from ._deadline import EXPECTED_TIMEOUT, GRPC_TIMEOUT
from ._fast_path import FastPath
from ._scope import Scope

_log = logging.getLogger("meshprop")


class Plan:
    """What the adapters, the capture and the clients read for one Config."""

    __slots__ = (
        "cap_timeouts",
        "config",
        "echo_name",
        "echo_name_bytes",
        "environ_prefixes",
        "excluded",
        "fast_path",
        "forwarded_name_set",
        "forwarded_names",
        "forwards_request_id",
        "generate_request_id",
        "max_headers",
        "max_total_length",
        "message_names",
        "names_by_bytes",
        "names_by_environ_key",
        "prefer_w3c",
        "prefixes",
        "prefixes_bytes",
        "request_id_cap",
        "request_id_name",
        "rules",
        "scope",
        "trust_request_id",
    )

    def __init__(self, config: Config, *, use_fast_path: bool) -> None:
        excluded = frozenset(config.exclude)
        prefixes = [*config.prefixes]
        preset_names: list[str] = []
        for preset in config.presets:
            names, preset_prefixes = h.PRESETS[preset]
            preset_names += names
            prefixes += preset_prefixes
        forwarded: dict[str, None] = {}
        for name in (*config.headers, *preset_names, *config.extra_headers):
            if name not in excluded and not name.startswith(h.NEVER_FORWARDED_PREFIX):
                forwarded[name] = None
        request_id_name = config.request_id_header
        if request_id_name != h.REQUEST_ID:
            forwarded.pop(h.REQUEST_ID, None)
        if request_id_name not in excluded:
            forwarded[request_id_name] = None
        caps = config.max_lengths
        self.config = config
        self.request_id_name = request_id_name
        self.request_id_cap = caps.get(request_id_name, config.max_length)
        self.forwards_request_id = request_id_name in forwarded
        self.trust_request_id = config.trust_incoming_request_id
        self.generate_request_id = _checked_generator(
            config.request_id_generator, self.request_id_cap
        )
        self.echo_name = config.echo_header
        self.echo_name_bytes = None if config.echo_header is None else config.echo_header.encode()
        self.forwarded_names = tuple(forwarded)
        self.forwarded_name_set = frozenset(forwarded)
        self.rules = tuple(
            (h.rule_for(name), self.cap_for(name)) for name in forwarded if name != request_id_name
        )
        # What the general path picks up: the forwarded names, and the deadline's.
        read = (*forwarded, EXPECTED_TIMEOUT)
        self.names_by_bytes = {name.encode("ascii"): name for name in read}
        self.names_by_environ_key = {_environ_key(name): name for name in read}
        # ...and from any header pairs (``bind``, gRPC metadata), ``grpc-timeout`` too.
        self.message_names = frozenset((*read, GRPC_TIMEOUT))
        self.prefixes = tuple(
            p for p in dict.fromkeys(prefixes) if not p.startswith(h.NEVER_FORWARDED_PREFIX)
        )
        self.prefixes_bytes = tuple(p.encode("ascii") for p in self.prefixes)
        self.environ_prefixes = tuple(_environ_key(p) for p in self.prefixes)
        self.excluded = excluded
        self.scope: Scope = compiled_scope(config.scope)  # type: ignore[arg-type]
        self.prefer_w3c = config.prefer == "w3c"
        self.max_headers = config.max_headers
        self.max_total_length = config.max_total_length
        self.cap_timeouts = config.cap_timeouts
        self.fast_path = FastPath.for_plan(self) if use_fast_path else None

    def cap_for(self, name: str) -> int:
        """A header's cap: the Config's for it, else its rule's, else ``Config.max_length``."""
        config = self.config
        return config.max_lengths.get(name) or h.rule_for(name).cap or config.max_length

    def is_prefixed_name_forwarded(self, name: str) -> bool:
        """Whether a header picked up by a configured prefix may travel: its name comes from
        the request, so it must be a well-formed name, and neither excluded, nor the sidecar's
        own (``x-envoy-*``), nor a credential."""
        return (
            name not in self.excluded
            and not name.startswith(h.NEVER_FORWARDED_PREFIX)
            and name not in h.CREDENTIAL_HEADERS
            and h.is_header_name(name)
        )

    def fits_budget(self) -> bool:
        """Whether every named header at its cap fits the total budget (then it is never
        checked per request)."""
        total = sum(len(rule.name) + cap for rule, cap in self.rules)
        total += len(self.request_id_name) + self.request_id_cap
        return len(self.forwarded_names) <= self.max_headers and total <= self.max_total_length


def _environ_key(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


def _checked_generator(generate: Callable[[], str] | None, cap: int) -> Callable[[], str] | None:
    """The Config's request id generator, its ids held to the request-id rule: a custom one may
    return anything, and its id is forwarded and echoed. A bad id is replaced by a UUID4."""
    if generate is None or generate is uuid4_request_id:
        return generate
    warned = False

    def checked() -> str:
        nonlocal warned
        try:
            request_id = generate()
        except Exception:
            request_id = None
        if (
            isinstance(request_id, str)
            and len(request_id) <= cap
            and h.is_valid_request_id(request_id)
        ):
            return request_id
        if not warned:
            warned = True
            _log.warning(
                "request_id_generator %r returned %.60r, not a valid request id; "
                "using UUID4s instead where it does",
                generate,
                request_id,
            )
        return uuid4_request_id()

    return checked


_use_fast_path = os.environ.get("MESHPROP_FAST_PATH", "1").strip().lower() not in ("0", "false")


@functools.lru_cache(maxsize=64)
def _plan(config: Config, use_fast_path: bool) -> Plan:
    return Plan(config, use_fast_path=use_fast_path)


def plan_for(config: Config | None = None) -> Plan:
    """The plan of ``config`` (the process default, from the environment, when None), compiled
    once."""
    return _plan(config or default_config(), _use_fast_path)


def use_fast_path(enabled: bool) -> None:
    """Turn the fast matcher on or off for plans made from now on (``MESHPROP_FAST_PATH=0``
    turns it off at start-up): the general path alone gives the same answers."""
    global _use_fast_path
    _use_fast_path = enabled
