"""Part 5: hypothesis over ``bind``, ``current``, ``outbound_headers`` and the adapters, in-process.

Header lists are drawn from valid-by-construction values for each header (so the rules' edges
are reached) and from mutations of them (hostile characters, blanks, case, truncation, random
text); URLs from every form a host takes (names, dotted and numeric addresses, IPv6, userinfo,
bad ports, unparseable). Each example is judged by the oracle, never by meshprop's code. A
violation is recorded, not raised, so one run reports every kind it meets (the shortest example
of each). The adapters (ASGI, WSGI, aiohttp's middleware) are driven without a server, so the
fast path meets the same inputs the general path does.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import os
import random
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import meshprop
import meshprop.aiohttp
import meshprop.asgi
import meshprop.wsgi

from . import apps, oracle, verdicts
from .report import Figures, Violations, clip, memory_check

Pairs = list[tuple[str, str]]

HEX = "0123456789abcdef"
HOSTILE = (
    "\r",
    "\n",
    "\x00",
    "\x01",
    "\t",
    "\x7f",
    "\x0b",
    "é",
    "\u2028",
    "\x85",
    "🚀",
    " ",
    "A",
    "F",
    "-",
    "=",
    ",",
    "@",
    ";",
)
_PRINTABLE = "".join(map(chr, range(0x20, 0x7F)))
_VISIBLE = _PRINTABLE[1:]
_TS_KEY_FIRST = "0123456789abcdefghijklmnopqrstuvwxyz"
_TS_KEY_REST = _TS_KEY_FIRST + "_-*/@"
_TS_VALUE_LAST = "".join(c for c in _VISIBLE if c not in ",=")
_TS_VALUE = " " + _TS_VALUE_LAST
_UNICODE = "aé\u00ff\u0100\u2028\u4e2d\U0001f680\x00\x1f\x7f\x85"
_ZERO16, _ZERO32 = "0" * 16, "0" * 32
Gen = random.Random


def _text(rng: Gen, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def _hex(rng: Gen, size: int) -> str:
    return "".join(rng.choice(HEX) for _ in range(size))


def _span(rng: Gen) -> str:
    return _ZERO16 if rng.random() < 0.15 else _hex(rng, 16)


def _trace(rng: Gen) -> str:
    roll = rng.random()
    return _ZERO32 if roll < 0.1 else _hex(rng, 16) if roll < 0.35 else _hex(rng, 32)


def _traceparent(rng: Gen) -> str:
    version = rng.choice(["00", "00", "00", "01", "0a", "fe", "ff", _hex(rng, 2)])
    trace = _ZERO32 if rng.random() < 0.1 else _hex(rng, 32)
    extra = rng.choice(["", "", "", "", "-x", "-abc-def", "x", "-"])
    return f"{version}-{trace}-{_span(rng)}-{_hex(rng, 2)}{extra}"


def _b3(rng: Gen) -> str:
    if rng.random() < 0.2:
        return rng.choice(["0", "1", "d", "2", ""])
    rest = rng.choice(["", "", "-0", "-1", "-d", "-x", f"-{rng.choice('01d')}-{_span(rng)}"])
    return f"{_trace(rng)}-{_span(rng)}{rest}"


def _tracestate(rng: Gen) -> str:
    count = rng.choice([1, 1, 2, 3, 5, 8, 31, 32, 33, 36])
    members = []
    for _ in range(count):
        if rng.random() < 0.1:
            members.append("")
            continue
        key = rng.choice(_TS_KEY_FIRST) + _text(rng, _TS_KEY_REST, 0, 12)
        value = _text(rng, _TS_VALUE, 0, 12) + rng.choice(_TS_VALUE_LAST)
        members.append(f"{key}={value}")
    if rng.random() < 0.15:
        members.append(rng.choice(members))
    separators = [",", ",", ", ", " , ", ",\t", "\t,", ",,"]
    out = members[0]
    for member in members[1:]:
        out += rng.choice(separators) + member
    return out


def _generic(rng: Gen) -> str:
    if rng.random() < 0.7:
        return _text(rng, _PRINTABLE, 0, rng.choice([8, 40, 230]))
    return _text(rng, _PRINTABLE + _UNICODE, 0, 40)


VALUES: dict[str, Callable[[Gen], str]] = {
    oracle.REQUEST_ID: lambda rng: (
        str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if rng.random() < 0.3
        else _text(rng, _VISIBLE, 1, rng.choice([12, 60, 210]))
    ),
    oracle.TRACEPARENT: _traceparent,
    oracle.TRACESTATE: _tracestate,
    oracle.B3: _b3,
    oracle.B3_TRACE: _trace,
    oracle.B3_SPAN: _span,
    oracle.B3_PARENT: lambda rng: "" if rng.random() < 0.15 else _span(rng),
    oracle.B3_SAMPLED: lambda rng: rng.choice(["0", "1", "true", "false", "True", "2", "", "yes"]),
    oracle.B3_FLAGS: lambda rng: rng.choice(["1", "0", "", "d", "11"]),
    oracle.BAGGAGE: lambda rng: _text(rng, _PRINTABLE, 0, 60),
}
OTHER_NAMES = (
    "x-tenant-a",
    "x-tenant-b",
    "x-tenant-long-name",
    "x-envoy-original-path",
    "x-other",
    "content-type",
    "x_tenant_c",
    "x-tenant-é",
    "x-tenant a",
)
NAMES = (*VALUES, *OTHER_NAMES)


def _value(rng: Gen, name: str) -> str:
    """A value for ``name``: valid by construction half the time, else mutated."""
    value = VALUES.get(name, _generic)(rng)
    how = rng.randint(0, 11)
    if how == 6:
        position = rng.randint(0, len(value))
        value = value[:position] + rng.choice(HOSTILE) + value[position:]
    elif how == 7:
        value = rng.choice([" ", "\t", " \t"]) + value + rng.choice(["", " ", "\t "])
    elif how == 8:
        value = value.upper()
    elif how == 9 and value:
        value = value[: rng.randint(0, len(value) - 1)]
    elif how == 10:
        value = _generic(rng)
    elif how == 11:
        value = value * rng.randint(2, 40)
    return value


def _cased(rng: Gen, name: str) -> str:
    if rng.random() < 0.75:
        return name
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


def _group(rng: Gen) -> Pairs:
    """One header, or headers that only mean something together."""
    kind = rng.randint(0, 9)
    if kind <= 4:
        name = rng.choice(NAMES)
        return [(_cased(rng, name), _value(rng, name))]
    if kind <= 6:
        pairs = [(_cased(rng, oracle.TRACEPARENT), _value(rng, oracle.TRACEPARENT))]
        for _ in range(rng.randint(1, 3)):
            pairs.append((oracle.TRACESTATE, _value(rng, oracle.TRACESTATE)))
        return pairs
    if kind == 7:
        names = [oracle.B3_TRACE, oracle.B3_SPAN, oracle.B3_PARENT][: rng.randint(1, 3)]
        return [(_cased(rng, n), _value(rng, n)) for n in names]
    if kind == 8:
        return [(f"x-tenant-{i}", _text(rng, _PRINTABLE, 0, 8)) for i in range(rng.randint(2, 60))]
    return [(oracle.REQUEST_ID, _value(rng, oracle.REQUEST_ID)) for _ in range(rng.randint(2, 3))]


def header_list(rng: Gen) -> Pairs:
    return [pair for _ in range(rng.randint(0, 6)) for pair in _group(rng)]


#: Header lists: hypothesis draws the seed, a plain Random builds the list (hypothesis's own
#: text and regex strategies cost ~30 ms an example here, this ~0.1 ms).
HEADERS = st.randoms(use_true_random=True).map(header_list)
RULES = st.sampled_from([oracle.DEFAULT, oracle.TENANT])

# ---- URLs ---------------------------------------------------------------------------------

_LABELS = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
_V4_BLOCKS = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "8.8.8.0/24",
    "93.184.216.0/24",
    "203.0.113.0/24",
    "1.1.1.0/24",
)


@st.composite
def _v4(draw: st.DrawFn) -> tuple[str, str]:
    block = ipaddress.ip_network(draw(st.sampled_from(_V4_BLOCKS)))
    address = int(block.network_address) + draw(st.integers(1, block.num_addresses - 2))
    parts = list(ipaddress.IPv4Address(address).packed)
    form = draw(st.sampled_from(["dotted", "dotted", "decimal", "hex", "octal", "short"]))
    if form == "dotted":
        return ".".join(map(str, parts)), "dotted address"
    if form == "decimal":
        return str(address), "numeric host (decimal)"
    if form == "hex":
        return draw(st.sampled_from(["0x", "0X"])) + f"{address:x}", "numeric host (hex)"
    if form == "octal":
        return ".".join(f"0{p:o}" for p in parts), "numeric host (octal)"
    return f"{parts[0]}.{(address & 0xFFFFFF)}", "numeric host (short)"


_HOSTS = st.one_of(
    st.tuples(_LABELS, st.just("single-label name")),
    st.tuples(_LABELS.map(lambda n: n + ".svc"), st.just("name")),
    st.tuples(st.builds("{}.{}.svc.cluster.local".format, _LABELS, _LABELS), st.just("name")),
    st.tuples(_LABELS.map(lambda n: n + ".local"), st.just("name")),
    st.tuples(st.sampled_from(["localhost", "LOCALHOST", "Peer"]), st.just("name")),
    st.tuples(
        st.builds(
            "{}.{}".format,
            _LABELS,
            st.sampled_from(
                ["example.com", "svc.evil.com", "local.com", "svc.cluster.local.evil.io"]
            ),
        ),
        st.just("name"),
    ),
    _v4(),
    st.tuples(
        st.sampled_from(
            ["[::1]", "[fc00::1]", "[fd12:3456::1]", "[fe80::1]", "[2001:4860:4860::8888]"]
        ),
        st.just("IPv6 address"),
    ),
)
_UNPARSEABLE = (
    "http://[::1/",
    "http://exa mple/",
    "http://peer\\@evil.com/",
    "not a url",
    "",
    "http://",
    "http://[zz]/",
    "http://peer:99999/",
    "http://peer:abc/",
    "http://peer:80:81/",
    "http://pe\x00er/",
    "http://[::1]x/",
)


@st.composite
def _url(draw: st.DrawFn) -> tuple[str, str]:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(_UNPARSEABLE)), "unparseable"
    host, form = draw(_HOSTS)
    scheme = draw(st.sampled_from(["http", "https", "HTTP"]))
    userinfo = draw(st.sampled_from(["", "", "", "user@", "evil.com@", "a:b@"]))
    port = draw(st.sampled_from(["", "", ":80", ":8080", ":"]))
    path = draw(st.sampled_from(["/", "", "/x?y=1#z", "?q"]))
    return f"{scheme}://{userinfo}{host}{port}{path}", form


# ---- the properties -----------------------------------------------------------------------

_BASELINE = [
    ("x-request-id", "fuzz-baseline"),
    ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
]


def _example(pairs: Sequence[tuple[Any, Any]], rules: oracle.Rules, extra: str = "") -> str:
    return clip(f"{rules.name} config{extra}: {list(pairs)!r}")


def _str_pairs(pairs: Sequence[tuple[Any, Any]]) -> Pairs:
    return [
        tuple(x.decode("latin-1") if isinstance(x, bytes) else x for x in pair)  # type: ignore[misc]
        for pair in pairs
    ]


def check_bind(headers: Any, rules: oracle.Rules, violations: Violations) -> None:
    """One ``with meshprop.bind(headers):``: inside it, the oracle; after it, nothing left."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    example = _example(items, rules)
    try:
        with meshprop.bind(headers, config=apps.CONFIGS[rules.name]) as view:
            observation = apps.observe(_str_pairs(items), rules.name, joined=False)
            if dict(view) != observation["seen"]:
                violations.add("bind's view is not current()", example)
    except Exception as error:
        violations.add(f"bind raised {type(error).__name__}", f"{example}: {error!r}")
        return
    verdicts.check(observation, violations, example)
    if meshprop.current() or meshprop.request_id() is not None:
        violations.add("bind left its context behind", example)


def check_url(url: str, form: str, violations: Violations) -> None:
    """``outbound_headers(url)`` inside a request: the scope oracle decides, nothing raises."""
    with meshprop.bind(_BASELINE) as view:
        forwarded = dict(view)
        try:
            got = meshprop.outbound_headers(url)
        except Exception as error:
            violations.add(
                f"outbound_headers raised {type(error).__name__} [{form}]", f"{url!r}: {error!r}"
            )
            return
    verdict = oracle.scope(url)
    if verdict == oracle.IN and got != forwarded:
        violations.add(f"outbound_headers withholds from an in-scope URL [{form}]", repr(url))
    elif verdict == oracle.OUT and got:
        violations.add(f"outbound_headers forwards to an out-of-scope URL [{form}]", repr(url))
    elif verdict == oracle.OPEN and got not in ({}, forwarded):
        violations.add(f"outbound_headers gives a partial set [{form}]", repr(url))


def _drive(coroutine: Awaitable[Any]) -> Any:
    """Run a coroutine that never really suspends (no event loop needed)."""
    assert isinstance(coroutine, Coroutine)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the adapter awaited something real")


def _wire_bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()  # as a server hands over UTF-8 bytes


def check_asgi(pairs: Pairs, rules: oracle.Rules, violations: Violations) -> None:
    scope_headers = [(_wire_bytes(oracle.ascii_lower(n)), _wire_bytes(v)) for n, v in pairs]
    delivered = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope_headers]
    seen: dict[str, Any] = {}
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(apps.observe(delivered, rules.name, joined=False))
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request"}

    example = _example(delivered, rules, " (ASGI)")
    middleware = meshprop.asgi.MeshPropMiddleware(app, apps.CONFIGS[rules.name])
    try:
        _drive(middleware({"type": "http", "headers": scope_headers}, receive, send))
    except Exception as error:
        violations.add(f"ASGI middleware raised {type(error).__name__}", f"{example}: {error!r}")
        return
    echoes = [v.decode("latin-1") for n, v in sent[0]["headers"] if n == b"x-request-id"]
    verdicts.check(seen, violations, example, echoes=echoes)


def check_wsgi(pairs: Pairs, rules: oracle.Rules, separator: str, violations: Violations) -> None:
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    for name, value in pairs:
        if not oracle.is_token(name):
            continue  # a server refuses the request; nothing reaches the app
        key = "HTTP_" + name.upper().replace("-", "_")
        value = _wire_bytes(value).decode("latin-1").strip(" \t")
        environ[key] = environ[key] + separator + value if key in environ else value
    delivered = [
        (k[5:].lower().replace("_", "-"), v) for k, v in environ.items() if k.startswith("HTTP_")
    ]
    seen: dict[str, Any] = {}
    echoes: list[str] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        seen.update(apps.observe(delivered, rules.name, joined=True))
        start_response("200 OK", [])
        return [b""]

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        echoes.extend(v for n, v in headers if n.lower() == "x-request-id")
        return lambda data: None

    example = _example(delivered, rules, f" (WSGI, joined with {separator!r})")
    try:
        body = meshprop.wsgi.MeshPropMiddleware(app, apps.CONFIGS[rules.name])(
            environ, start_response
        )
        list(body)
        getattr(body, "close", lambda: None)()
    except Exception as error:
        violations.add(f"WSGI middleware raised {type(error).__name__}", f"{example}: {error!r}")
        return
    verdicts.check(seen, violations, example, echoes=echoes)


def check_aiohttp(pairs: Pairs, rules: oracle.Rules, violations: Violations) -> None:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request
    from multidict import CIMultiDict

    request = make_mocked_request("GET", "/", headers=CIMultiDict(pairs))
    delivered = list(request.headers.items())
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.update(apps.observe(delivered, rules.name, joined=False))
        return web.Response()

    example = _example(delivered, rules, " (aiohttp)")
    middleware = meshprop.aiohttp.middleware(apps.CONFIGS[rules.name])
    try:
        response = _drive(middleware(request, handler))
    except Exception as error:
        violations.add(f"aiohttp middleware raised {type(error).__name__}", f"{example}: {error!r}")
        return
    verdicts.check(seen, violations, example, echoes=response.headers.getall("x-request-id", []))


# ---- running ------------------------------------------------------------------------------

Check = Callable[[Any, Violations], None]
SHRINK_ATTEMPTS = 400


def _base(kind: str) -> tuple[str, frozenset[str]]:
    """A kind's name without its traits, and the traits."""
    name, _, rest = kind.partition(" [")
    return name, frozenset(rest.rstrip("]").split(", ")) if rest else frozenset()


class _Smallest:
    """Per kind: how often it was seen, and the smallest input that showed it (to shrink)."""

    def __init__(self) -> None:
        self.found: dict[str, tuple[int, Any, Check]] = {}
        self.counts: dict[str, int] = {}

    def run(self, check: Check, value: Any) -> None:
        local = Violations()
        check(value, local)
        size = len(repr(value))
        for kind, entry in local.kinds.items():
            self.counts[kind] = self.counts.get(kind, 0) + entry.count
            best = self.found.get(kind)
            if best is None or size < best[0]:
                self.found[kind] = (size, value, check)

    def report(self, into: Violations, deadline: float) -> None:
        """Shrink each kind's input (same kind, no new traits), then report it."""
        for kind, (_, value, check) in sorted(self.found.items(), key=lambda item: item[1][0]):
            if time.monotonic() < deadline:
                value = _shrink(value, check, kind)
            final = Violations()
            check(value, final)
            name, traits = _base(kind)
            matching = [k for k in final.kinds if _base(k)[0] == name and _base(k)[1] <= traits]
            chosen = matching[0] if matching else kind
            example = final.kinds[chosen].example if matching else repr(value)
            into.add(chosen, example, self.counts[kind])


def _still(kind: str, check: Check, value: Any) -> bool:
    name, traits = _base(kind)
    local = Violations()
    check(value, local)
    return any(_base(k)[0] == name and _base(k)[1] <= traits for k in local.kinds)


def _shrink(value: Any, check: Check, kind: str) -> Any:
    """Greedy: drop whole headers, then halves and single characters of values, while the
    violation (or a narrower form of it) persists. Bounded in attempts."""
    if not isinstance(value, tuple) or not isinstance(value[0], list):
        return value
    pairs, *rest = value
    attempts = 0

    def keeps(candidate: Pairs) -> bool:
        nonlocal attempts
        attempts += 1
        return _still(kind, check, (candidate, *rest))

    changed = True
    while changed and attempts < SHRINK_ATTEMPTS:
        changed = False
        for index in range(len(pairs)):
            candidate = pairs[:index] + pairs[index + 1 :]
            if keeps(candidate):
                pairs, changed = candidate, True
                break
        if changed:
            continue
        for index, (name, text) in enumerate(pairs):
            cuts = [(0, len(text) // 2), (len(text) // 2, len(text))]
            cuts += [(i, i + 1) for i in range(len(text))]
            for start, end in cuts:
                if attempts >= SHRINK_ATTEMPTS or end <= start:
                    continue
                candidate = list(pairs)
                candidate[index] = (name, text[:start] + text[end:])
                if keeps(candidate):
                    pairs, changed = candidate, True
                    break
            if changed:
                break
    return (pairs, *rest)


def _run_property(
    test: Callable[..., None],
    strategies: dict[str, Any],
    examples: int,
    deadline: float,
    run_seed: int,
) -> int:
    """Run one property for up to ``examples`` examples or until ``deadline``; the count run."""
    counter = [0]

    @seed(run_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(**strategies)
    def prop(**drawn: Any) -> None:
        if time.monotonic() > deadline:
            raise _OutOfTime
        counter[0] += 1
        test(**drawn)

    with contextlib.suppress(_OutOfTime):
        prop()
    return counter[0]


class _OutOfTime(Exception):
    """Stops a property at its deadline (hypothesis would go on generating otherwise)."""


def _as_bind_input(pairs: Pairs, form: str) -> Any:
    if form == "bytes":
        return [(_wire_bytes(n), _wire_bytes(x)) for n, x in pairs]
    if form == "dict" and len({n for n, _ in pairs}) == len(pairs):
        return dict(pairs)
    return pairs


def _bind_check(value: Any, violations: Violations) -> None:
    pairs, rules, form = value
    check_bind(_as_bind_input(pairs, form), rules, violations)


def _url_check(value: Any, violations: Violations) -> None:
    check_url(value[0], value[1], violations)


def _asgi_check(value: Any, violations: Violations) -> None:
    check_asgi(value[0], value[1], violations)


def _wsgi_check(value: Any, violations: Violations) -> None:
    check_wsgi(value[0], value[1], value[2], violations)


def _aiohttp_check(value: Any, violations: Violations) -> None:
    check_aiohttp(value[0], value[1], violations)


def run(examples: int = 20_000, seconds: float = 90.0, run_seed: int | None = None) -> Figures:
    """Part 5: ``examples`` in all, shared among the properties (bind and URLs the most)."""
    figures = Figures("fuzz")
    started = time.monotonic()
    if run_seed is None:
        run_seed = int(os.environ.get("STRESS_SEED", random.randrange(2**32)))
    figures.notes.append(f"hypothesis seed {run_seed} (STRESS_SEED={run_seed} repeats it)")
    smallest = _Smallest()
    replay: list[tuple[Any, oracle.Rules]] = []

    def bind_property(headers: Pairs, rules: oracle.Rules, form: str) -> None:
        if len(replay) < 500:
            replay.append((_as_bind_input(headers, form), rules))
        smallest.run(_bind_check, (headers, rules, form))

    forms = st.sampled_from(["pairs", "bytes", "dict"])
    shares: list[tuple[Callable[..., None], dict[str, Any], float]] = [
        (bind_property, {"headers": HEADERS, "rules": RULES, "form": forms}, 0.3),
        (lambda url: smallest.run(_url_check, url), {"url": _url()}, 0.25),
        (
            lambda headers, rules: smallest.run(_asgi_check, (headers, rules)),
            {"headers": HEADERS, "rules": RULES},
            0.15,
        ),
        (
            lambda headers, rules, sep: smallest.run(_wsgi_check, (headers, rules, sep)),
            {"headers": HEADERS, "rules": RULES, "sep": st.sampled_from([",", ", "])},
            0.15,
        ),
        (
            lambda headers, rules: smallest.run(_aiohttp_check, (headers, rules)),
            {"headers": HEADERS, "rules": RULES},
            0.15,
        ),
    ]
    budget_end = started + seconds * 0.8  # the rest is for shrinking and the leak check
    for index, (test, strategies, share) in enumerate(shares):
        slot_end = time.monotonic() + (budget_end - time.monotonic()) / (len(shares) - index)
        figures.inputs += _run_property(
            test, strategies, max(1, int(examples * share)), slot_end, run_seed
        )
    smallest.report(figures.violations, started + seconds)
    _leak_check(replay, figures)
    figures.seconds = time.monotonic() - started
    return figures


def _leak_check(replay: list[tuple[Any, oracle.Rules]], figures: Figures, passes: int = 5) -> None:
    """Replay recorded inputs through bind and outbound_headers; traced memory must not grow."""
    if not replay:
        return

    def one_pass() -> None:
        for headers, rules in replay:
            with meshprop.bind(headers, config=apps.CONFIGS[rules.name]):
                meshprop.outbound_headers("http://peer/")
                meshprop.current()

    one_pass()
    before = apps.memory()
    tracemalloc.start()
    gc.collect()
    traced_before = tracemalloc.get_traced_memory()[0]
    for _ in range(passes):
        one_pass()
    gc.collect()
    traced_after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    after = apps.memory()
    runs = passes * len(replay)
    memory_check(figures, "in-process bind replay", before, after, runs)
    growth = (traced_after - traced_before) / 1024
    figures.memory.append(
        f"in-process bind replay: tracemalloc {growth:+.1f} KiB over {runs} binds"
    )
    if growth > 1024:
        figures.violations.add("memory growth past the limit", f"tracemalloc {growth:+.1f} KiB")
