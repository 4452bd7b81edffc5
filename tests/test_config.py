"""Config: its defaults, the mistakes it refuses early, and reading it from the environment."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

import meshprop
from meshprop import _headers as h
from meshprop._config import DEFAULT_CONFIG, ENVIRONMENT, Config, default_config, uuid4_request_id
from meshprop._plan import plan_for


def _forwarded(config: Config, headers: dict[str, str]) -> dict[str, str]:
    with meshprop.bind(headers, config=config) as forwarded:
        return dict(forwarded)


def test_defaults_are_istios() -> None:
    config = Config()
    plan = plan_for(config)
    assert plan.forwarded_names == h.DEFAULT_HEADERS
    assert config.trust_incoming_request_id is True
    assert plan.echo_name == "x-request-id"
    assert plan.request_id_name == "x-request-id"
    assert config.request_id_generator is uuid4_request_id
    assert config.in_scope("http://payment-service/charge")
    assert not config.in_scope("https://api.example.com/")
    assert config == DEFAULT_CONFIG


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_CONFIG.max_length = 10  # type: ignore[misc]


def test_equivalent_configs_are_equal_and_hash_alike() -> None:
    first = Config(headers=["X-Request-Id", "b3"], scope="mesh", max_lengths={"B3": 100})
    second = Config(headers=("x-request-id", "b3", "b3"), scope=("mesh",), max_lengths={"b3": 100})
    assert first == second and hash(first) == hash(second)
    assert {first: 1}[second] == 1
    assert hash(Config()) == hash(Config())
    assert Config(max_length=100) != Config()


def test_one_plan_per_distinct_config() -> None:
    assert plan_for(Config(extra_headers=["x-canary"])) is plan_for(
        Config(extra_headers=("x-canary",))
    )
    assert plan_for(None) is plan_for(DEFAULT_CONFIG)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"presets": ["zipkin"]},
            ValueError,
            "unknown preset 'zipkin'; the presets are: aws, baggage",
        ),
        ({"presets": "baggage"}, TypeError, "presets takes a collection"),
        ({"headers": "x-request-id"}, TypeError, "headers takes a collection of header names"),
        ({"extra_headers": "x-canary"}, TypeError, "extra_headers takes a collection"),
        ({"prefixes": "x-tenant-"}, TypeError, "prefixes takes a collection"),
        ({"exclude": "b3"}, TypeError, "exclude takes a collection"),
        ({"extra_headers": ["x canary"]}, ValueError, "'x canary' is not a valid header name"),
        ({"extra_headers": ["x-canary:"]}, ValueError, "is not a valid header name"),
        ({"extra_headers": [""]}, ValueError, "is not a valid header name"),
        ({"extra_headers": ["x-caf\u00e9"]}, ValueError, "is not a valid header name"),
        ({"extra_headers": ["x-a\r\nb"]}, ValueError, "is not a valid header name"),
        ({"extra_headers": [b"x-canary"]}, TypeError, "is not a str header name"),
        ({"request_id_header": "x id"}, ValueError, "request_id_header"),
        ({"echo_header": "x\nid"}, ValueError, "echo_header"),
        ({"request_id_generator": "uuid4"}, TypeError, "request_id_generator must be a callable"),
        ({"max_length": 0}, ValueError, "max_length must be a whole number from 1 to 65536"),
        ({"max_length": 10**10}, ValueError, "max_length must be a whole number"),
        ({"max_length": 200.5}, ValueError, "max_length must be a whole number"),
        ({"max_lengths": {"baggage": 0}}, ValueError, "max_lengths['baggage'] must be a whole"),
        ({"max_headers": 0}, ValueError, "max_headers"),
        ({"max_total_length": -1}, ValueError, "max_total_length"),
        ({"prefer": "zipkin"}, ValueError, "prefer='zipkin': expected 'b3' or 'w3c'"),
        ({"scope": ""}, ValueError, "scope is empty"),
        ({"scope": ()}, ValueError, "scope is empty"),
        ({"max_lengths": {"bad name": 10}}, ValueError, "is not a valid header name"),
        ({"scope": ["*" + "bad*"]}, ValueError, "scope pattern"),
        ({"scope": ["10.0.0.0/33"]}, ValueError, "not a valid address block"),
    ],
)
def test_mistakes_fail_early_with_a_message(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Config(**kwargs)


def test_names_are_normalised() -> None:
    config = Config(
        extra_headers=[" X-Canary "],
        request_id_header="X-Correlation-Id",
        echo_header="X-Correlation-Id",
        max_lengths={"X-Canary": 5},
    )
    assert config.extra_headers == ("x-canary",)
    assert config.request_id_header == config.echo_header == "x-correlation-id"
    assert config.max_lengths == {"x-canary": 5}
    forwarded = _forwarded(
        config, {"X-Correlation-Id": "c-1", "X-Canary": "on", "x-request-id": "r"}
    )
    assert forwarded == {"x-canary": "on", "x-correlation-id": "c-1"}
    assert _forwarded(config, {"x-canary": "toolong"}).get("x-canary") is None


def test_echo_can_be_turned_off() -> None:
    assert plan_for(Config(echo_header=None)).echo_name is None


def test_exclude_wins_over_everything() -> None:
    config = Config(
        presets=["baggage"], extra_headers=["x-canary"], exclude=["baggage", "x-canary", "b3"]
    )
    forwarded = _forwarded(config, {"baggage": "k=v", "x-canary": "on", "b3": "1"})
    assert not {"baggage", "x-canary", "b3"} & set(forwarded)


def test_prefixes_forward_well_formed_names_only() -> None:
    config = Config(presets=["datadog"], prefixes=["x-tenant-", "x-"], exclude=["x-tenant-secret"])
    headers = {
        "x-datadog-trace-id": "1",
        "x-tenant-id": "t",
        "x-anything": "a",
        "x-tenant-secret": "s",
        "x-envoy-attempt-count": "1",
        "authorization": "Bearer t",
    }
    assert set(_forwarded(config, headers)) == {
        "x-request-id",
        "x-datadog-trace-id",
        "x-tenant-id",
        "x-anything",
    }


def test_from_env_reads_every_setting() -> None:
    config = Config.from_env(
        {
            "MESHPROP_PRESETS": "baggage, datadog",
            "MESHPROP_EXTRA_HEADERS": "x-canary,end-user,",
            "MESHPROP_PREFIXES": "x-tenant-",
            "MESHPROP_EXCLUDE": "b3",
            "MESHPROP_SCOPE": "mesh,*.corp.internal",
            "MESHPROP_REQUEST_ID_HEADER": "x-correlation-id",
            "MESHPROP_ECHO_HEADER": "",
            "MESHPROP_TRUST_INCOMING_REQUEST_ID": "false",
            "MESHPROP_GENERATE_REQUEST_ID": "no",
            "MESHPROP_HEADERS": "x-request-id,traceparent,b3",
            "MESHPROP_MAX_LENGTH": "100",
            "MESHPROP_MAX_LENGTHS": "baggage=4096, x-canary=20",
            "MESHPROP_MAX_HEADERS": "20",
            "MESHPROP_MAX_TOTAL_LENGTH": "8000",
            "MESHPROP_PREFER": "W3C",
            "UNRELATED": "x",
        }
    )
    assert config.presets == ("baggage", "datadog")
    assert config.extra_headers == ("x-canary", "end-user")
    assert config.prefixes == ("x-tenant-",)
    assert config.exclude == ("b3",)
    assert config.in_scope("https://billing.corp.internal/") and config.in_scope("payment")
    assert config.request_id_header == "x-correlation-id"
    assert config.echo_header is None
    assert config.trust_incoming_request_id is False
    assert config.request_id_generator is None
    assert config.headers == ("x-request-id", "traceparent", "b3")
    assert config.max_length == 100
    assert config.max_lengths == {"baggage": 4096, "x-canary": 20}
    assert (config.max_headers, config.max_total_length) == (20, 8000)
    assert config.prefer == "w3c"


def test_every_setting_has_its_variable() -> None:
    settings = {setting for setting, _ in ENVIRONMENT.values()}
    assert settings == {f.name for f in dataclasses.fields(Config)}


def test_from_env_defaults_and_overrides() -> None:
    assert Config.from_env({}) == Config()
    config = Config.from_env({"MESHPROP_GENERATE_REQUEST_ID": "on"}, max_length=64)
    assert config.request_id_generator is uuid4_request_id
    assert config.max_length == 64
    assert Config.from_env({"MESHPROP_SCOPE": "all"}, scope="mesh").in_scope("example.com") is False


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHPROP_EXTRA_HEADERS", "x-canary")
    assert Config.from_env().extra_headers == ("x-canary",)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MESHPROP_TRUST_INCOMING_REQUEST_ID": "maybe"}, "expected true or false"),
        ({"MESHPROP_PRESETS": "zipkin"}, "unknown preset"),
        ({"MESHPROP_EXTRA_HEADERS": "bad name"}, "MESHPROP_EXTRA_HEADERS='bad name': .*header"),
        ({"MESHPROP_SCOPE": ""}, "MESHPROP_SCOPE='': empty"),
        ({"MESHPROP_SCOPE": " , "}, "MESHPROP_SCOPE"),
        ({"MESHPROP_MAX_LENGTH": "big"}, "MESHPROP_MAX_LENGTH='big': expected a whole number"),
        ({"MESHPROP_MAX_LENGTH": "0"}, "MESHPROP_MAX_LENGTH='0': max_length must be"),
        (
            {"MESHPROP_MAX_LENGTHS": "baggage"},
            "MESHPROP_MAX_LENGTHS='baggage': 'baggage': expected",
        ),
        ({"MESHPROP_PREFER": "zipkin"}, "MESHPROP_PREFER='zipkin'"),
        (
            {"MESHPROP_SCOPEE": "all"},
            "unknown setting MESHPROP_SCOPEE; the known ones are: .*MESHPROP_SCOPE",
        ),
    ],
)
def test_from_env_rejects_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config.from_env(env)


def test_the_environment_is_the_default_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHPROP_EXTRA_HEADERS", "x-canary")
    default_config.cache_clear()
    try:
        with meshprop.bind({"x-canary": "on", "x-request-id": "r1"}) as forwarded:
            assert forwarded["x-canary"] == "on"
        middleware = meshprop.asgi.MeshPropMiddleware(lambda *args: None)  # type: ignore[arg-type]
        assert middleware.config.extra_headers == ("x-canary",)
    finally:
        default_config.cache_clear()


def test_a_bad_variable_fails_at_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHPROP_SCOPEE", "all")
    default_config.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"MESHPROP_SCOPEE.*MESHPROP_SCOPE"):
            meshprop.asgi.MeshPropMiddleware(lambda *args: None)  # type: ignore[arg-type]
    finally:
        monkeypatch.delenv("MESHPROP_SCOPEE")
        default_config.cache_clear()
