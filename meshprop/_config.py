"""``Config``: the settings every adapter and client accepts, and reading them from the
environment.

A Config is a plain value: normalised when built (so equivalent settings compare and hash
equal), checked when built (a bad setting fails here, naming it, never at request time), and
never read by the hot path, which reads the plan ``_plan.plan_for`` compiles from it.
"""

from __future__ import annotations

import functools
import os
import uuid
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from . import _headers
from ._scope import MESH, Scope


def uuid4_request_id() -> str:
    """The default request id generator: a random UUID4, as Envoy generates."""
    return str(uuid.uuid4())


class Caps(Mapping[str, int]):
    """A read-only, hashable mapping of header names to caps (``Config.max_lengths``)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, int]) -> None:
        self._items = dict(sorted(items.items()))

    def __getitem__(self, name: str) -> int:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and self._items == dict(other.items())

    def __repr__(self) -> str:
        return repr(self._items)


PREFERENCES = ("b3", "w3c")


@dataclass(frozen=True)
class Config:
    """What meshprop forwards, to where, and how it treats the request id.

    The defaults are Istio's: forward the headers Istio asks applications to copy, trust the
    incoming ``x-request-id`` (generate a UUID4 when there is none), echo it on the response, and
    propagate only to destinations inside the mesh.
    """

    #: The base set of forwarded header names (case-insensitive).
    headers: Collection[str] = _headers.DEFAULT_HEADERS
    #: Named header sets of other tracers to add (``_headers.PRESETS``).
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
    #: Per-header size caps, over the rules' own (baggage 8192, tracestate 512, ...).
    max_lengths: Mapping[str, int] = field(default_factory=dict)
    #: At most this many headers are forwarded, and at most ``max_total_length`` characters of
    #: names and values together; prefixed headers are dropped first, trace headers never.
    max_headers: int = 32
    max_total_length: int = 16384
    #: Which trace context names the caller's span when B3 and W3C both came and disagree:
    #: ``"b3"`` or ``"w3c"`` (``trace_id()``, ``span_id()`` and ``MeshPropagator``).
    prefer: str = "b3"
    #: Cap every client's timeout to what is left of the caller's deadline (``deadline()``).
    #: Off by default: work that outlives the response must not inherit the caller's deadline.
    cap_timeouts: bool = False

    def __post_init__(self) -> None:
        def normalise(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        normalise("headers", _names(self.headers, "headers"))
        normalise("extra_headers", _names(self.extra_headers, "extra_headers"))
        normalise("exclude", _names(self.exclude, "exclude"))
        normalise("prefixes", _names(self.prefixes, "prefixes"))
        if isinstance(self.presets, str) or not isinstance(self.presets, Collection):
            raise TypeError(f"presets takes a collection of preset names, not {self.presets!r}")
        for preset in self.presets:
            if preset not in _headers.PRESETS:
                known = ", ".join(sorted(_headers.PRESETS))
                raise ValueError(f"presets: unknown preset {preset!r}; the presets are: {known}")
        normalise("presets", tuple(dict.fromkeys(self.presets)))
        normalise("request_id_header", _names((self.request_id_header,), "request_id_header")[0])
        if self.echo_header is not None:
            normalise("echo_header", _names((self.echo_header,), "echo_header")[0])
        if self.request_id_generator is not None and not callable(self.request_id_generator):
            raise TypeError("request_id_generator must be a callable returning a str, or None")
        if not isinstance(self.trust_incoming_request_id, bool):
            raise TypeError("trust_incoming_request_id must be True or False")
        if not isinstance(self.cap_timeouts, bool):
            raise TypeError("cap_timeouts must be True or False")
        _check_cap("max_length", self.max_length)
        caps = {}
        for name, cap in dict(self.max_lengths).items():
            (lowered,) = _names((name,), "max_lengths")
            _check_cap(f"max_lengths[{lowered!r}]", cap)
            caps[lowered] = cap
        normalise("max_lengths", Caps(caps))
        _check_cap("max_headers", self.max_headers, largest=1000)
        _check_cap("max_total_length", self.max_total_length)
        if self.prefer not in PREFERENCES:
            raise ValueError(f"prefer={self.prefer!r}: expected 'b3' or 'w3c'")
        patterns = (self.scope,) if isinstance(self.scope, str) else tuple(self.scope)
        patterns = tuple(dict.fromkeys(str(pattern).strip().lower() for pattern in patterns))
        if not patterns or "" in patterns:
            raise ValueError(
                "scope is empty: use 'mesh', 'all', or host patterns ('*.corp.internal', ...)"
            )
        compiled_scope(patterns)  # a bad pattern fails here, not at the first call
        normalise("scope", patterns)
        for name in (*self.headers, *self.extra_headers):
            if name in _headers.CREDENTIAL_HEADERS and name not in self.exclude:
                warnings.warn(
                    f"meshprop forwards the credential header {name!r} to every destination in "
                    "the scope, because the Config names it",
                    stacklevel=3,
                )

    def __hash__(self) -> int:
        # Computed once: a Config is looked up by value wherever a plan is needed.
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", cached)
        return cached

    def in_scope(self, url_or_host: str) -> bool:
        """Whether a destination (an absolute URL or a bare host) gets the propagation headers."""
        scope = compiled_scope(self.scope)  # type: ignore[arg-type]  # normalised to a tuple
        if "/" in url_or_host:
            return scope.includes_url(url_or_host)
        return scope.includes_host(url_or_host)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """A Config from the ``MESHPROP_*`` environment variables (``ENVIRONMENT`` lists them),
        for deployments configured through the pod spec. Keyword arguments win over the
        environment. An unknown ``MESHPROP_*`` variable, or a bad value, raises ``ValueError``
        naming it."""
        env = os.environ if environ is None else environ
        settings: dict[str, Any] = {}
        for key, value in env.items():
            if not key.startswith("MESHPROP_"):
                continue
            reader = _READERS.get(key)
            if reader is None:
                if key in PROCESS_SWITCHES:
                    continue
                known = ", ".join([*ENVIRONMENT, *PROCESS_SWITCHES])
                raise ValueError(f"unknown setting {key}; the known ones are: {known}")
            setting, parse = reader
            try:
                settings[setting] = parse(value)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cls(**{setting: settings[setting]})  # judged alone, to name the variable
            except (TypeError, ValueError) as error:
                raise ValueError(f"{key}={value!r}: {error}") from None
        settings.update(overrides)
        return cls(**settings)


@functools.lru_cache(maxsize=64)
def compiled_scope(patterns: tuple[str, ...]) -> Scope:
    """The compiled form of a normalised ``Config.scope`` (one per distinct scope)."""
    return Scope(patterns)


def _names(values: Collection[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Collection):
        raise TypeError(f"{what} takes a collection of header names, not {values!r}")
    names: dict[str, None] = {}
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"{what}: {value!r} is not a str header name")
        name = value.strip().lower()
        if not _headers.is_header_name(name):
            raise ValueError(f"{what}: {value!r} is not a valid header name")
        names[name] = None
    return tuple(names)


def _check_cap(what: str, cap: object, largest: int = _headers.LARGEST_CAP) -> None:
    if not isinstance(cap, int) or isinstance(cap, bool) or not 1 <= cap <= largest:
        raise ValueError(f"{what} must be a whole number from 1 to {largest}, not {cap!r}")


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _scope_list(value: str) -> tuple[str, ...]:
    patterns = _list(value)
    if not patterns:
        raise ValueError("empty: use 'mesh', 'all', or host patterns")
    return patterns


def _number(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def _caps(value: str) -> dict[str, int]:
    caps = {}
    for item in _list(value):
        name, equals, cap = item.partition("=")
        if not equals:
            raise ValueError(f"{item!r}: expected name=cap")
        caps[name.strip()] = _number(cap)
    return caps


def _generator(value: str) -> Callable[[], str] | None:
    return uuid4_request_id if _flag(value) else None


#: Every ``MESHPROP_*`` variable ``Config.from_env`` reads: variable -> (setting, what it takes).
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "MESHPROP_HEADERS": ("headers", "comma-separated header names"),
    "MESHPROP_PRESETS": ("presets", "comma-separated preset names"),
    "MESHPROP_EXTRA_HEADERS": ("extra_headers", "comma-separated header names"),
    "MESHPROP_PREFIXES": ("prefixes", "comma-separated name prefixes"),
    "MESHPROP_EXCLUDE": ("exclude", "comma-separated header names"),
    "MESHPROP_REQUEST_ID_HEADER": ("request_id_header", "a header name"),
    "MESHPROP_GENERATE_REQUEST_ID": ("request_id_generator", "true or false"),
    "MESHPROP_TRUST_INCOMING_REQUEST_ID": ("trust_incoming_request_id", "true or false"),
    "MESHPROP_ECHO_HEADER": ("echo_header", "a header name; empty turns the echo off"),
    "MESHPROP_SCOPE": ("scope", "mesh, all, or comma-separated patterns"),
    "MESHPROP_MAX_LENGTH": ("max_length", "a number of characters"),
    "MESHPROP_MAX_LENGTHS": ("max_lengths", "comma-separated name=cap"),
    "MESHPROP_MAX_HEADERS": ("max_headers", "a number of headers"),
    "MESHPROP_MAX_TOTAL_LENGTH": ("max_total_length", "a number of characters"),
    "MESHPROP_PREFER": ("prefer", "b3 or w3c"),
    "MESHPROP_CAP_TIMEOUTS": ("cap_timeouts", "true or false"),
}
#: Variables that switch process-wide behaviour rather than a Config setting.
PROCESS_SWITCHES = ("MESHPROP_FAST_PATH",)

_PARSERS: dict[str, Callable[[str], Any]] = {
    "headers": _list,
    "presets": _list,
    "extra_headers": _list,
    "prefixes": _list,
    "exclude": _list,
    "request_id_header": str.strip,
    "request_id_generator": _generator,
    "trust_incoming_request_id": _flag,
    "echo_header": lambda value: value.strip() or None,
    "scope": _scope_list,
    "max_length": _number,
    "max_lengths": _caps,
    "max_headers": _number,
    "max_total_length": _number,
    "prefer": lambda value: value.strip().lower(),
    "cap_timeouts": _flag,
}
_READERS = {key: (setting, _PARSERS[setting]) for key, (setting, _) in ENVIRONMENT.items()}

#: Config's defaults, without the environment.
DEFAULT_CONFIG = Config()


@functools.cache
def default_config() -> Config:
    """The process default, used wherever no Config is given: ``Config.from_env()``, read
    once, at first use, so a bad ``MESHPROP_*`` variable fails at start-up, not per request."""
    return Config.from_env()
