"""``Config``: the frozen settings every adapter and client accepts, and reading them from the
environment.

Everything a request would otherwise recompute (which names to look for, in which spellings,
with which caps) is worked out once here, when the Config is built, so the hot path only does
dictionary lookups.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import _headers
from ._fast_path import FastPath
from ._scope import MESH, Scope


def uuid4_request_id() -> str:
    """The default request id generator: a random UUID4, as Envoy generates."""
    return str(uuid.uuid4())


def _names(values: Collection[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise TypeError(f"{what} takes a collection of header names, not the string {values!r}")
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"{what}: {value!r} is not a str header name")
    names = tuple(value.strip().lower() for value in values)
    for name in names:
        if not _headers.is_header_name(name):
            raise ValueError(f"{what}: {name!r} is not a valid header name")
    return names


@dataclass(frozen=True)
class Config:
    """What meshprop forwards, to where, and how it treats the request id.

    The defaults are Istio's: forward the headers Istio asks applications to copy, trust the
    incoming ``x-request-id`` (generate a UUID4 when there is none), echo it on the response, and
    propagate only to destinations inside the mesh.
    """

    #: The base set of forwarded header names (case-insensitive).
    headers: Collection[str] = _headers.DEFAULT_HEADERS
    #: Named header sets of other tracers to add: baggage, lightstep, stackdriver, skywalking,
    #: datadog.
    presets: Collection[str] = ()
    #: More header names to forward, for example routing headers such as ``x-canary``.
    extra_headers: Collection[str] = ()
    #: Forward every header whose name starts with one of these, for example ``x-tenant-``.
    prefixes: Collection[str] = ()
    #: Header names never to forward, even if another setting names them.
    exclude: Collection[str] = ()
    #: The header that carries the request id.
    request_id_header: str = _headers.REQUEST_ID
    #: Makes a request id when none (or an invalid one) came in; ``None`` turns generation off.
    request_id_generator: Callable[[], str] | None = uuid4_request_id
    #: ``False`` is the edge mode: the incoming request id is always replaced by a new one.
    trust_incoming_request_id: bool = True
    #: The response header that echoes the request id; ``None`` turns the echo off.
    echo_header: str | None = _headers.REQUEST_ID
    #: Destinations that get the headers: ``"mesh"``, ``"all"``, or a collection of patterns
    #: (hosts, ``*.suffix``, address blocks, and the ``"mesh"`` token).
    scope: str | Collection[str] = MESH
    #: Size cap, in characters, for any forwarded header without a cap of its own.
    max_length: int = _headers.DEFAULT_MAX_LENGTH
    #: Per-header size caps, over the defaults (baggage 8192, tracestate 512).
    max_lengths: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        base = _names(self.headers, "headers")
        extra = _names(self.extra_headers, "extra_headers")
        excluded = set(_names(self.exclude, "exclude"))
        prefixes = list(_names(self.prefixes, "prefixes"))
        if isinstance(self.presets, str):
            raise TypeError(
                f"presets takes a collection of preset names, not the string {self.presets!r}"
            )
        preset_names: list[str] = []
        for preset in self.presets:
            if preset not in _headers.PRESETS:
                known = ", ".join(sorted(_headers.PRESETS))
                raise ValueError(f"unknown preset {preset!r}; the presets are: {known}")
            names, preset_prefixes = _headers.PRESETS[preset]
            preset_names.extend(names)
            prefixes.extend(preset_prefixes)
        request_id_header = _names((self.request_id_header,), "request_id_header")[0]
        echo_header = None
        if self.echo_header is not None:
            echo_header = _names((self.echo_header,), "echo_header")[0]
        if self.request_id_generator is not None and not callable(self.request_id_generator):
            raise TypeError("request_id_generator must be a callable returning a str, or None")
        if self.max_length < 1:
            raise ValueError("max_length must be at least 1")

        forwarded: dict[str, None] = {}
        for name in (*base, *preset_names, *extra):
            if name not in excluded and not name.startswith(_headers.NEVER_FORWARDED_PREFIX):
                forwarded[name] = None
        if request_id_header != _headers.REQUEST_ID and _headers.REQUEST_ID in forwarded:
            del forwarded[_headers.REQUEST_ID]
        if request_id_header not in excluded:
            forwarded[request_id_header] = None
        max_lengths = {**_headers.DEFAULT_MAX_LENGTHS}
        cap_names = _names(self.max_lengths, "max_lengths")
        for name, cap in zip(cap_names, self.max_lengths.values(), strict=True):
            if not isinstance(cap, int) or cap < 1:
                raise ValueError(f"max_lengths[{name!r}] must be an int of at least 1, not {cap!r}")
            max_lengths[name] = cap
        scope = (self.scope,) if isinstance(self.scope, str) else tuple(self.scope)

        derived: dict[str, Any] = {
            "request_id_name": request_id_header,
            "echo_name": echo_header,
            "echo_name_bytes": echo_header.encode("ascii") if echo_header else None,
            "forwarded_names": tuple(forwarded),
            "forwarded_name_set": frozenset(forwarded),
            "forwards_request_id": request_id_header in forwarded,
            "request_id_max_length": max_lengths.get(request_id_header, self.max_length),
            "names_by_bytes": {name.encode("ascii"): name for name in forwarded},
            "names_by_environ_key": {
                "HTTP_" + name.upper().replace("-", "_"): name for name in forwarded
            },
            "prefixes": tuple(
                p
                for p in dict.fromkeys(prefixes)
                if not p.startswith(_headers.NEVER_FORWARDED_PREFIX)
            ),
            "excluded": frozenset(excluded),
            "max_lengths": max_lengths,
            "compiled_scope": Scope(scope),
        }
        derived["prefixes_bytes"] = tuple(p.encode("ascii") for p in derived["prefixes"])
        derived["environ_prefixes"] = tuple(
            "HTTP_" + p.upper().replace("-", "_") for p in derived["prefixes"]
        )
        for key, value in derived.items():
            object.__setattr__(self, "_" + key, value)
        # Built last: it reads the lookups above.
        object.__setattr__(self, "_fast_path", FastPath.for_config(self))

    # The derived lookups, typed for the modules that read them.
    _request_id_name: str = field(init=False, repr=False, compare=False)
    _echo_name: str | None = field(init=False, repr=False, compare=False)
    _echo_name_bytes: bytes | None = field(init=False, repr=False, compare=False)
    _forwarded_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _forwarded_name_set: frozenset[str] = field(init=False, repr=False, compare=False)
    _forwards_request_id: bool = field(init=False, repr=False, compare=False)
    _request_id_max_length: int = field(init=False, repr=False, compare=False)
    _names_by_bytes: dict[bytes, str] = field(init=False, repr=False, compare=False)
    _names_by_environ_key: dict[str, str] = field(init=False, repr=False, compare=False)
    _prefixes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _prefixes_bytes: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _environ_prefixes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _excluded: frozenset[str] = field(init=False, repr=False, compare=False)
    _max_lengths: dict[str, int] = field(init=False, repr=False, compare=False)
    _compiled_scope: Scope = field(init=False, repr=False, compare=False)
    _fast_path: FastPath | None = field(init=False, repr=False, compare=False)

    def is_forwarded_name(self, name: str) -> bool:
        """Whether a (lower-case) header name is one this Config forwards."""
        if name in self._forwarded_name_set:
            return True
        return (
            name.startswith(self._prefixes)
            and name not in self._excluded
            and not name.startswith(_headers.NEVER_FORWARDED_PREFIX)
            and _headers.is_header_name(name)
        )

    def in_scope(self, url_or_host: str) -> bool:
        """Whether a destination (an absolute URL or a bare host) gets the propagation headers."""
        scope = self._compiled_scope
        if "/" in url_or_host:
            return scope.includes_url(url_or_host)
        return scope.includes_host(url_or_host)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build a Config from ``MESHPROP_*`` environment variables, for deployments that
        configure through the pod spec rather than code.

        ``MESHPROP_PRESETS``, ``MESHPROP_EXTRA_HEADERS``, ``MESHPROP_PREFIXES``,
        ``MESHPROP_EXCLUDE`` and ``MESHPROP_SCOPE`` take comma-separated lists;
        ``MESHPROP_REQUEST_ID_HEADER`` and ``MESHPROP_ECHO_HEADER`` a name (empty turns the echo
        off); ``MESHPROP_TRUST_INCOMING_REQUEST_ID`` and ``MESHPROP_GENERATE_REQUEST_ID`` take
        true/false. Keyword arguments win over the environment.
        """
        env = os.environ if environ is None else environ
        settings: dict[str, Any] = {}
        for key, setting in (
            ("MESHPROP_PRESETS", "presets"),
            ("MESHPROP_EXTRA_HEADERS", "extra_headers"),
            ("MESHPROP_PREFIXES", "prefixes"),
            ("MESHPROP_EXCLUDE", "exclude"),
            ("MESHPROP_SCOPE", "scope"),
        ):
            if key in env:
                settings[setting] = tuple(v.strip() for v in env[key].split(",") if v.strip())
        if "MESHPROP_REQUEST_ID_HEADER" in env:
            settings["request_id_header"] = env["MESHPROP_REQUEST_ID_HEADER"]
        if "MESHPROP_ECHO_HEADER" in env:
            settings["echo_header"] = env["MESHPROP_ECHO_HEADER"].strip() or None
        for key, setting in (
            ("MESHPROP_TRUST_INCOMING_REQUEST_ID", "trust_incoming_request_id"),
            ("MESHPROP_GENERATE_REQUEST_ID", "request_id_generator"),
        ):
            if key in env:
                flag = _parse_flag(key, env[key])
                if setting == "request_id_generator":
                    settings[setting] = uuid4_request_id if flag else None
                else:
                    settings[setting] = flag
        settings.update(overrides)
        return cls(**settings)


def _parse_flag(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{key}={value!r}: expected true or false")


#: The Config used wherever none is given.
DEFAULT_CONFIG = Config()
