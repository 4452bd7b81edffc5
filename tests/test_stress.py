"""The stress harness works: a tiny slice of each part, against one server or in-process.

The slices prove the machinery (servers start and stop, requests flow, figures add up, the
oracle judges); the full run is ``make stress``. The hostile slice uses cases the design and
the current code agree on, so it stays green while the known defects are being fixed; the
fuzz slice may meet those defects and only has to run cleanly.
"""

from __future__ import annotations

from stress import abandoned, fuzz, hostile, inflight, oracle, pipelining, verdicts
from stress.report import Violations, render

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_oracle_states_the_design() -> None:
    valid = oracle.expect(
        [
            ("X-Request-Id", " id-1\t"),
            ("traceparent", TP),
            ("tracestate", "a=1,\tb@x@y=2"),
            ("tracestate", "a=3"),
        ]
    )
    assert valid.request_id == "id-1"
    assert valid.forwarded == {"traceparent": TP, "tracestate": "a=1,\tb@x@y=2,a=3"}
    assert valid.trace_ids == {"0af7651916cd43dd8448eb211c80319c"}
    assert oracle.expect([("traceparent", TP), ("traceparent", TP)]).forwarded == {}
    assert (
        oracle.expect([("x-request-id", "first-1,second-2")], joined=True).request_id == "first-1"
    )
    zero_parent = "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1-" + "0" * 16
    assert oracle.expect([("b3", zero_parent)]).forwarded == {"b3": zero_parent}
    tenant = oracle.expect(
        [("x-tenant-a", "t"), ("x-envoy-x", "e"), ("x-tenant-b", "a\rb")], oracle.TENANT
    )
    assert tenant.forwarded == {"x-tenant-a": "t"}
    assert oracle.scope("http://payments/") == oracle.IN
    assert oracle.scope("http://2852039166/") == oracle.OUT  # 169.254.169.254
    assert oracle.scope("http://0x7f000001/") == oracle.IN
    assert oracle.scope("http://[::1/") == oracle.OUT
    assert oracle.scope("http://api.example.com/") == oracle.OUT


def test_verdicts_flag_what_the_oracle_forbids() -> None:
    observation = {
        "rules": "default",
        "joined": False,
        "delivered": [("x-request-id", "id-1")],
        "seen": {"x-request-id": "id-1", "x-envoy-peer": "p", "b3": "1\r\n"},
        "rid": "id-1",
        "tid": None,
        "out": {},
        "errors": ["outbound_headers: ValueError()"],
    }
    violations = Violations()
    verdicts.check(observation, violations, "made up", echoes=["id-1", "id-1"])
    kinds = set(violations.kinds)
    assert "x-envoy-* header forwarded" in kinds
    assert "unsafe value forwarded: b3" in kinds
    assert "2 x-request-id headers echoed" in kinds
    assert "outbound_headers('http://peer/') is not current()" in kinds
    assert any(kind.startswith("meshprop raised") for kind in kinds)


AGREED = {
    "baseline",
    "no headers at all",
    "CR in x-request-id",
    "NUL in traceparent",
    "utf-8 e-acute in tracestate",
    "16 KB tracestate",
    "tracestate of 513 chars",
    "two different traceparent",
    "x-request-id twice, first invalid",
    "upper-case names",
    "x-envoy headers",
    "100 x-tenant-* headers",
    "request id with a space",
}


def test_hostile_slice_on_uvicorn() -> None:
    cases = [case for case in hostile.corpus() if case.label in AGREED]
    assert len(cases) == len(AGREED)
    figures = hostile.run(("uvicorn-h11",), cases, seconds=60)
    print(render([figures], figures.seconds))
    assert figures.requests == 2 * len(cases)
    assert not figures.failed


def test_inflight_slice() -> None:
    figures = inflight.run(("uvicorn-h11",), count=300, call_every=10, seconds=60)
    print(render([figures], figures.seconds))
    assert figures.max_concurrency == 300
    assert figures.cross_talk == 0
    assert not figures.failed


def test_abandoned_slice_on_waitress() -> None:
    figures = abandoned.run(("waitress",), requests=64, clients=8, seconds=30)
    print(render([figures], figures.seconds))
    assert figures.requests >= 64 + abandoned.THREADS
    assert not figures.failed


def test_pipelining_slice() -> None:
    figures = pipelining.run(("uvicorn-httptools",), connections=10, depth=8, seconds=30)
    print(render([figures], figures.seconds))
    assert figures.requests == 80
    assert not figures.failed


def test_fuzz_slice_runs_every_property() -> None:
    figures = fuzz.run(examples=300, seconds=30, run_seed=0)
    print(render([figures], figures.seconds))
    assert figures.inputs >= 250
    assert figures.errors == 0
    assert not any(kind.startswith(("memory", "bind left")) for kind in figures.violations.kinds)
