"""Part 1: hostile requests over raw sockets against every real server.

Each case is a list of header lines written byte for byte: control characters, non-ASCII and
obs-fold in trace header values, oversized values, repeated headers, odd casing, invalid ids,
header-name tricks and hundreds of ``x-tenant-*`` headers. Every case goes to every server
kind, once under the default Config (meshprop's fast path) and once under the tenant Config
(prefixes and baggage, the general path). A server may refuse a request (4xx, or closing the
connection); it must stay up, and whatever reaches the app must obey the oracle.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from . import verdicts
from .report import Figures, clip, memory_check
from .serve import KINDS
from .servers import Running, Server, running
from .wire import Incomplete, exchange, request

TP = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TS = b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
B3 = b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"
B3_TRACE = b"463ac35c9f6413ad48485a3953bb6124"
B3_SPAN = b"a2fb4a1d1a96d312"
RID = b"stress-req-1"
REQUEST_TIMEOUT = 30.0
HEALTH_EVERY = 20


@dataclass(frozen=True)
class Case:
    label: str
    lines: tuple[bytes, ...]


def _case(label: str, *lines: bytes) -> Case:
    return Case(label, lines)


_HOSTILE_BYTES: tuple[tuple[str, bytes], ...] = (
    ("CR", b"\r"),
    ("LF", b"\n"),
    ("NUL", b"\x00"),
    ("SOH", b"\x01"),
    ("ESC", b"\x1b"),
    ("DEL", b"\x7f"),
    ("VT", b"\x0b"),
    ("FF", b"\x0c"),
    ("inner tab", b"\t"),
    ("utf-8 e-acute", "é".encode()),
    ("latin-1 e-acute", b"\xe9"),
    ("emoji", "🚀".encode()),
    ("0xff", b"\xff"),
)

# The headers a hostile value is put in, each with the valid companions it needs to travel.
_CARRIERS: tuple[tuple[bytes, bytes, tuple[bytes, ...]], ...] = (
    (b"x-request-id", RID, ()),
    (b"traceparent", TP, ()),
    (b"tracestate", TS, (b"traceparent: " + TP,)),
    (b"b3", B3, ()),
    (b"x-b3-traceid", B3_TRACE, (b"x-b3-spanid: " + B3_SPAN,)),
    (b"baggage", b"userId=alice,tier=gold", ()),
    (b"x-tenant-a", b"acme-corp", ()),
)


def _members(count: int, width: int = 8) -> bytes:
    return b",".join(b"k%d=%s" % (i, b"v" * width) for i in range(count))


def _sized(value: bytes, size: int, filler: bytes = b"a") -> bytes:
    return (value + filler * size)[:size] if len(value) < size else value[:size]


def corpus() -> list[Case]:
    """Every hostile case, in a fixed order."""
    cases = [
        _case(
            "baseline",
            b"x-request-id: " + RID,
            b"traceparent: " + TP,
            b"tracestate: " + TS,
            b"b3: " + B3,
            b"x-b3-traceid: " + B3_TRACE,
            b"x-b3-spanid: " + B3_SPAN,
            b"x-b3-sampled: 1",
            b"baggage: a=1",
            b"x-tenant-a: acme",
        ),
        _case("no headers at all"),
    ]
    for name, value, companions in _CARRIERS:
        middle = len(value) // 2
        for what, raw in _HOSTILE_BYTES:
            hostile = value[:middle] + raw + value[middle:]
            cases.append(_case(f"{what} in {name.decode()}", *companions, name + b": " + hostile))
    cases += [
        _case("bare LF header injection", b"x-request-id: abc\nx-b3-sampled: 1"),
        _case("bare CR header injection", b"x-request-id: abc\rx-b3-sampled: 1"),
        _case("CRLF-looking text in a value", b"x-request-id: abc%0d%0ax-evil:1"),
    ]
    for name, value, companions in _CARRIERS[:3] + _CARRIERS[-1:]:
        for fold in (b" folded", b"\tfolded"):
            cases.append(
                _case(f"obs-fold in {name.decode()}", *companions, name + b": " + value, fold)
            )
    for size in (1024, 8190, 16 * 1024, 32 * 1024, 60 * 1024):
        kb = f"{size / 1024:.0f} KB"
        cases += [
            _case(f"{kb} x-request-id", b"x-request-id: " + _sized(RID, size)),
            _case(
                f"{kb} traceparent",
                b"traceparent: " + _sized(TP.replace(b"00", b"01", 1) + b"-", size),
            ),
            _case(
                f"{kb} tracestate",
                b"traceparent: " + TP,
                b"tracestate: " + _members(size // 12)[:size],
            ),
            _case(f"{kb} baggage", b"baggage: " + _sized(b"k=", size)),
            _case(f"{kb} b3", b"b3: " + _sized(B3, size, b"0")),
            _case(f"{kb} x-tenant-a", b"x-tenant-a: " + _sized(b"t", size)),
        ]
    cases += [
        _case("x-request-id of 200 chars", b"x-request-id: " + b"r" * 200),
        _case("x-request-id of 201 chars", b"x-request-id: " + b"r" * 201),
        _case(
            "tracestate of 512 chars",
            b"traceparent: " + TP,
            b"tracestate: " + _sized(b"a=", 512, b"b"),
        ),
        _case(
            "tracestate of 513 chars",
            b"traceparent: " + TP,
            b"tracestate: " + _sized(b"a=", 513, b"b"),
        ),
        _case("baggage of 8192 chars", b"baggage: " + _sized(b"k=", 8192)),
        _case("baggage of 8193 chars", b"baggage: " + _sized(b"k=", 8193)),
        _case("x-tenant-a of 200 chars", b"x-tenant-a: " + b"t" * 200),
        _case("x-tenant-a of 201 chars", b"x-tenant-a: " + b"t" * 201),
    ]
    other_tp = b"00-11111111111111111111111111111111-2222222222222222-00"
    cases += [
        _case("two identical traceparent", b"traceparent: " + TP, b"traceparent: " + TP),
        _case(
            "two different traceparent",
            b"traceparent: " + TP,
            b"traceparent: " + other_tp,
            b"tracestate: a=1",
        ),
        _case(
            "x-request-id twice, both valid", b"x-request-id: first-1", b"x-request-id: second-2"
        ),
        _case(
            "x-request-id twice, first invalid", b"x-request-id: bad id", b"x-request-id: second-2"
        ),
        _case(
            "x-request-id twice, second invalid", b"x-request-id: first-1", b"x-request-id: bad id"
        ),
        _case(
            "x-request-id three times", b"x-request-id: a", b"x-request-id: b", b"x-request-id: c"
        ),
        _case(
            "tracestate five times",
            b"traceparent: " + TP,
            *(b"tracestate: m%d=v" % i for i in range(5)),
        ),
        _case(
            "tracestate 40 times",
            b"traceparent: " + TP,
            *(b"tracestate: m%d=v" % i for i in range(40)),
        ),
        _case(
            "tracestate thrice, one invalid",
            b"traceparent: " + TP,
            b"tracestate: a=1",
            b"tracestate: B=2",
            b"tracestate: c=3",
        ),
        _case("baggage three times", b"baggage: a=1", b"baggage: b=2", b"baggage: c=3"),
        _case("b3 twice", b"b3: " + B3, b"b3: 1"),
        _case(
            "x-b3-traceid twice",
            b"x-b3-traceid: " + B3_TRACE,
            b"x-b3-traceid: " + B3_TRACE[:16],
            b"x-b3-spanid: " + B3_SPAN,
        ),
        _case("x-tenant-a twice", b"x-tenant-a: one", b"x-tenant-a: two"),
        _case("x-request-id 200 times", *(b"x-request-id: id-%d" % i for i in range(200))),
    ]
    cases += [
        _case(
            "upper-case names", b"X-REQUEST-ID: " + RID, b"TRACEPARENT: " + TP, b"TRACESTATE: " + TS
        ),
        _case(
            "mixed-case names",
            b"x-ReQuEsT-iD: " + RID,
            b"X-B3-TraceId: " + B3_TRACE,
            b"X-b3-SpanID: " + B3_SPAN,
            b"B3: 1",
        ),
        _case("upper-case tenant name", b"X-TENANT-A: acme", b"X-Tenant-B: beta"),
        _case("upper-case hex in traceparent", b"traceparent: " + TP.upper()),
        _case("upper-case hex in b3", b"b3: " + B3.upper()),
        _case(
            "upper-case hex in x-b3-traceid",
            b"x-b3-traceid: " + B3_TRACE.upper(),
            b"x-b3-spanid: " + B3_SPAN,
        ),
        _case("upper-case tracestate key", b"traceparent: " + TP, b"tracestate: Congo=1"),
        _case("upper-case UUID request id", b"x-request-id: 9F2C4A4E-1D2B-4C3A-8F00-7E1A2B3C4D5E"),
    ]
    zero32, zero16 = b"0" * 32, b"0" * 16
    cases += [
        _case("traceparent version ff", b"traceparent: ff" + TP[2:]),
        _case(
            "traceparent all-zero trace id", b"traceparent: 00-" + zero32 + b"-b7ad6b7169203331-01"
        ),
        _case("traceparent all-zero parent id", b"traceparent: " + TP[:36] + zero16 + b"-01"),
        _case("traceparent too short", b"traceparent: " + TP[:-1]),
        _case("traceparent 00 with more after a dash", b"traceparent: " + TP + b"-x"),
        _case(
            "traceparent 01 with more after a dash",
            b"traceparent: 01" + TP[2:] + b"-future",
            b"tracestate: a=1",
        ),
        _case("traceparent 01, no more", b"traceparent: 01" + TP[2:]),
        _case("traceparent 01 with more, no dash", b"traceparent: 01" + TP[2:] + b"x"),
        _case(
            "traceparent with surrounding blanks",
            b"traceparent: \t " + TP + b" \t",
            b"tracestate: a=1",
        ),
        _case("b3 lone 0", b"b3: 0"),
        _case("b3 lone d", b"b3: d"),
        _case("b3 lone 2", b"b3: 2"),
        _case("b3 all-zero trace id", b"b3: " + zero32 + b"-e457b5a2e4d86bd1"),
        _case("b3 all-zero span id", b"b3: " + B3_TRACE + b"-" + zero16),
        _case("b3 all-zero parent", b"b3: " + B3_TRACE + b"-" + B3_SPAN + b"-1-" + zero16),
        _case("b3 bad sampling", b"b3: " + B3_TRACE + b"-" + B3_SPAN + b"-x"),
        _case("b3 64-bit trace", b"b3: " + B3_TRACE[:16] + b"-" + B3_SPAN),
        _case("b3 parent without sampling", b"b3: " + B3_TRACE + b"-" + B3_SPAN + b"-" + B3_SPAN),
        _case(
            "b3 multi, all-zero parent",
            b"x-b3-traceid: " + B3_TRACE,
            b"x-b3-spanid: " + B3_SPAN,
            b"x-b3-parentspanid: " + zero16,
        ),
        _case(
            "b3 multi, empty parent",
            b"x-b3-traceid: " + B3_TRACE,
            b"x-b3-spanid: " + B3_SPAN,
            b"x-b3-parentspanid: ",
        ),
        _case(
            "b3 multi, bad parent",
            b"x-b3-traceid: " + B3_TRACE,
            b"x-b3-spanid: " + B3_SPAN,
            b"x-b3-parentspanid: xyz",
        ),
        _case("b3 multi, no span", b"x-b3-traceid: " + B3_TRACE, b"x-b3-sampled: 1"),
        _case("b3 multi, parent only", b"x-b3-parentspanid: " + B3_SPAN),
        _case("x-b3-sampled true, flags 1", b"x-b3-sampled: true", b"x-b3-flags: 1"),
        _case("x-b3-sampled yes, flags 0", b"x-b3-sampled: yes", b"x-b3-flags: 0"),
        _case("request id with a space", b"x-request-id: bad id"),
        _case("empty request id", b"x-request-id: "),
        _case("request id in tabs", b"x-request-id: \t" + RID + b"\t"),
        _case("request id with a comma", b"x-request-id: a,b"),
    ]
    cases += [
        _case(
            "tracestate tabs around members", b"traceparent: " + TP, b"tracestate: a=1,\tb=2\t,c=3"
        ),
        _case("tracestate @ in key", b"traceparent: " + TP, b"tracestate: vendor@tenant=1,a@b@c=2"),
        _case("tracestate key starting with a digit", b"traceparent: " + TP, b"tracestate: 0abc=1"),
        _case("tracestate duplicate keys", b"traceparent: " + TP, b"tracestate: a=1,a=2"),
        _case("tracestate empty members", b"traceparent: " + TP, b"tracestate: a=1,,b=2, ,"),
        _case("tracestate 32 members", b"traceparent: " + TP, b"tracestate: " + _members(32, 1)),
        _case("tracestate 33 members", b"traceparent: " + TP, b"tracestate: " + _members(33, 1)),
        _case("tracestate value ending in a space", b"traceparent: " + TP, b"tracestate: a=1 ,b=2"),
        _case("tracestate value with =", b"traceparent: " + TP, b"tracestate: a=b=c"),
        _case(
            "tracestate key of 257 chars",
            b"traceparent: " + TP,
            b"tracestate: " + b"k" * 257 + b"=1",
        ),
        _case(
            "tracestate value of 256 chars", b"traceparent: " + TP, b"tracestate: a=" + b"v" * 256
        ),
        _case(
            "tracestate value of 257 chars", b"traceparent: " + TP, b"tracestate: a=" + b"v" * 257
        ),
        _case("tracestate without traceparent", b"tracestate: a=1"),
        _case("tracestate with invalid traceparent", b"traceparent: 00-xyz", b"tracestate: a=1"),
    ]
    cases += [
        _case("space before the colon", b"x-request-id : spaced"),
        _case("tab before the colon", b"x-request-id\t: tabbed"),
        _case("underscore name", b"x_request_id: underscored"),
        _case("first header line starts with a space", b" x-request-id: leading"),
        _case("no space after the colon", b"x-request-id:" + RID),
        _case("blanks around the value", b"x-request-id:    " + RID + b"    "),
        _case(
            "x-envoy headers",
            b"x-envoy-original-path: /admin",
            b"X-Envoy-Decorator-Operation: op",
            b"x-envoy-upstream-rq-timeout-ms: 1",
        ),
        _case("control char in a tenant name", b"x-tenant-\x01: v"),
        _case("non-ASCII tenant name", "x-tenant-é: v".encode()),
        _case("colon in a tenant value", b"x-tenant-a:b: c"),
        _case("parentheses in a tenant name", b"x-tenant-(a): v"),
        _case("bare tenant prefix as a name", b"x-tenant-: v"),
        _case("pseudo-header name", b":x-request-id: pseudo"),
        _case("line without a colon", b"x-request-id"),
        _case("NUL in a name", b"traceparent\x00: " + TP),
        _case("empty name", b": nameless"),
    ]
    for count in (100, 300, 600):
        cases.append(
            _case(
                f"{count} x-tenant-* headers", *(b"x-tenant-%d: t%d" % (i, i) for i in range(count))
            )
        )
    mixed = (b"ok", b"bad\x01", "é".encode(), b"x" * 201, b"", b"  padded  ")
    cases.append(
        _case(
            "300 x-tenant-* headers, mixed values",
            *(b"x-tenant-%d: " % i + mixed[i % len(mixed)] for i in range(300)),
        )
    )
    cases.append(
        _case(
            "100 tracestate headers",
            b"traceparent: " + TP,
            *(b"tracestate: k%d=v" % i for i in range(100)),
        )
    )
    return cases


def _check_health(running: Running, server: Server) -> bool:
    if not running.alive(server):
        return False
    try:
        return exchange(server.address, request("/health"), REQUEST_TIMEOUT).status == 200
    except (OSError, Incomplete):
        return False


def _describe(case: Case) -> str:
    return clip(" | ".join(repr(line)[2:-1] for line in case.lines), 300)


def run_on(
    running: Running, server: Server, cases: Sequence[Case], figures: Figures, deadline: float
) -> None:
    """Send every case to one server, one connection each; judge each answer."""
    for _ in range(5):  # warm up before the memory baseline
        exchange(server.address, request("/report", cases[0].lines), REQUEST_TIMEOUT)
    before = running.stats(server)
    sent = 0
    for index, case in enumerate(cases):
        if time.monotonic() > deadline:
            figures.notes.append(f"{server.label}: time budget reached after {sent} cases")
            break
        example = f"{server.label}: {case.label}: {_describe(case)}"
        sent += 1
        figures.count(requests=1)
        try:
            response = exchange(server.address, request("/report", case.lines), REQUEST_TIMEOUT)
        except (OSError, Incomplete):
            figures.count(rejected=1)  # closing on a malformed request is the server's right
            response = None
        if response is not None:
            if response.status == 200:
                verdicts.check(
                    response.json(), figures.violations, example, echoes=response.echoes()
                )
            elif 400 <= response.status < 500:
                figures.count(rejected=1)
            else:
                figures.error(f"{server.kind} answered {response.status}", example)
        if (index % HEALTH_EVERY == 0 or response is None) and not _check_health(running, server):
            figures.violations.add(f"server went down: {server.kind}", example)
            return
    after = running.stats(server)
    memory_check(figures, server.label, before, after, sent)
    ledger = after.get("ledger")
    if isinstance(ledger, dict):
        for kind, count in ledger.items():
            figures.violations.add(f"{kind} ({server.kind})", f"{count} times", int(count))
    _scan_log(running, server, figures)


def _scan_log(running: Running, server: Server, figures: Figures) -> None:
    """A traceback through meshprop's code is a violation; the server's own (its parser
    refusing a request) is only counted."""
    log = running.log(server)
    blocks = re.split(r"(?=Traceback \(most recent call last\):)", log)[1:]
    own = 0
    for block in blocks:
        if "meshprop/" in block or "/stress/apps.py" in block:
            figures.violations.add(
                f"traceback through meshprop in the {server.kind} log", clip(block)
            )
        else:
            own += 1
    if own:
        figures.notes.append(f"{server.label}: {own} tracebacks of the server's own (refusals)")


def _specs(kinds: Sequence[str]) -> Iterator[tuple[str, str]]:
    for kind in kinds:
        for config in ("default", "tenant"):
            yield kind, config


def run(
    kinds: Sequence[str] = KINDS, cases: Sequence[Case] | None = None, seconds: float = 120.0
) -> Figures:
    """Part 1 on the given server kinds; every server runs in its own client thread."""
    figures = Figures("hostile")
    cases = list(corpus() if cases is None else cases)
    figures.inputs = len(cases)
    started = time.monotonic()
    with running(list(_specs(kinds))) as servers:
        deadline = time.monotonic() + seconds
        threads = [
            threading.Thread(target=_guarded, args=(servers, server, cases, figures, deadline))
            for server in servers.servers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 120)
        for server in servers.servers:
            if not servers.alive(server):
                figures.violations.add(f"server went down: {server.kind}", server.label)
    figures.seconds = time.monotonic() - started
    return figures


def _guarded(
    running: Running, server: Server, cases: Sequence[Case], figures: Figures, deadline: float
) -> None:
    with figures.harness_failure_on(server.kind, server.label):  # not lost in the thread
        run_on(running, server, cases, figures, deadline)
