"""Config: its defaults, the mistakes it refuses early, and reading it from the environment."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from meshprop import _headers as h
from meshprop._config import DEFAULT_CONFIG, Config, uuid4_request_id


def test_defaults_are_istios() -> None:
    config = Config()
    assert config._forwarded_names == h.DEFAULT_HEADERS
    assert config.trust_incoming_request_id is True
    assert config._echo_name == "x-request-id"
    assert config._echo_name_bytes == b"x-request-id"
    assert config._request_id_name == "x-request-id"
    assert config.request_id_generator is uuid4_request_id
    assert config.in_scope("http://payment-service/charge")
    assert not config.in_scope("https://api.example.com/")
    assert config == DEFAULT_CONFIG


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_CONFIG.max_length = 10  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"presets": ["zipkin"]}, ValueError, "unknown preset 'zipkin'; the presets are: baggage"),
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
        ({"max_length": 0}, ValueError, "max_length must be at least 1"),
        ({"max_lengths": {"baggage": 0}}, ValueError, "max_lengths['baggage'] must be an int"),
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
        max_lengths={"X-Canary": 50},
    )
    assert "x-canary" in config._forwarded_names
    assert config._request_id_name == "x-correlation-id"
    assert config._echo_name == "x-correlation-id"
    assert config._max_lengths["x-canary"] == 50
    assert "x-request-id" not in config._forwarded_names


def test_echo_can_be_turned_off() -> None:
    config = Config(echo_header=None)
    assert config._echo_name is None and config._echo_name_bytes is None


def test_is_forwarded_name() -> None:
    config = Config(presets=["datadog"], prefixes=["x-tenant-", "x-"], exclude=["x-tenant-secret"])
    assert config.is_forwarded_name("b3")
    assert config.is_forwarded_name("x-datadog-trace-id")
    assert config.is_forwarded_name("x-tenant-id")
    assert config.is_forwarded_name("x-anything")
    assert not config.is_forwarded_name("x-tenant-secret")
    assert not config.is_forwarded_name("x-envoy-attempt-count")
    assert not config.is_forwarded_name("x-tenant-a b")
    assert not config.is_forwarded_name("authorization")


def test_exclude_wins_over_everything() -> None:
    config = Config(
        presets=["baggage"], extra_headers=["x-canary"], exclude=["baggage", "x-canary", "b3"]
    )
    assert not {"baggage", "x-canary", "b3"} & set(config._forwarded_names)


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
            "UNRELATED": "x",
        }
    )
    assert config.presets == ("baggage", "datadog")
    assert config.extra_headers == ("x-canary", "end-user")
    assert config.prefixes == ("x-tenant-",)
    assert config.exclude == ("b3",)
    assert config.in_scope("https://billing.corp.internal/") and config.in_scope("payment")
    assert config._request_id_name == "x-correlation-id"
    assert config._echo_name is None
    assert config.trust_incoming_request_id is False
    assert config.request_id_generator is None


def test_from_env_defaults_and_overrides() -> None:
    assert Config.from_env({}) == Config()
    config = Config.from_env({"MESHPROP_GENERATE_REQUEST_ID": "on"}, max_length=64)
    assert config.request_id_generator is uuid4_request_id
    assert config.max_length == 64
    assert Config.from_env({"MESHPROP_SCOPE": "all"}, scope="mesh").in_scope("example.com") is False


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHPROP_EXTRA_HEADERS", "x-canary")
    assert "x-canary" in Config.from_env()._forwarded_names


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MESHPROP_TRUST_INCOMING_REQUEST_ID": "maybe"}, "expected true or false"),
        ({"MESHPROP_PRESETS": "zipkin"}, "unknown preset"),
        ({"MESHPROP_EXTRA_HEADERS": "bad name"}, "not a valid header name"),
    ],
)
def test_from_env_rejects_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config.from_env(env)
