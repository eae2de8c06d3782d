"""Issue 13 without sockets: strict JSON text, safe defaults, the serve start-up check, and
``config check --json`` errors."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from channelcast.cli.main import main
from channelcast.config import GatewaySettings, Settings
from channelcast.errors import ConfigError, SerializationError
from channelcast.gateway import jsontext
from channelcast.gateway.protocol import ClientProtocol, Credentials, Send, Subscribe, dumps
from channelcast.gateway.server import MIN_SECRET_LENGTH, is_loopback, startup_check


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith(("KAFKA_", "CHANNELCAST_")):
            monkeypatch.delenv(var)


# --- strict JSON text ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "problem"), [
    ('"\\ud800"', "surrogate"),
    ('{"\\udc00": 1}', "surrogate"),
    ('["\\ud800\\u0041"]', "surrogate"),
    ("NaN", "NaN is not JSON"),
    ('{"a": -Infinity}', "-Infinity is not JSON"),
    ("[Infinity]", "Infinity is not JSON"),
    ("1e400", "infinity"),
    ("[" * 2000 + "]" * 2000, "depth"),
    (b"\xff", "UTF-8"),
    ("{oops", "expected a string key"),
])
def test_strict_loads_refuses_and_names_the_problem(text: str | bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        jsontext.loads(text)


def test_strict_loads_keeps_exact_values() -> None:
    text = '{"big": 123456789012345678901234567890, "f": 0.1, "pair": "\\ud83d\\ude00"}'
    assert jsontext.loads(text) == {"big": 123456789012345678901234567890, "f": 0.1,
                                    "pair": "\U0001F600"}
    assert jsontext.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, {"a": [math.nan]},
                                   "\ud800", {"\udc00": 1}, ["ok", "x\udfff"]])
def test_every_frame_is_strict_json_or_refused(value: object) -> None:
    with pytest.raises(SerializationError):
        dumps({"type": "pong", "data": value})
    with pytest.raises(ValueError, match=r"NaN|surrogate"):  # a SerializationError
        jsontext.dumps(value)


def test_strict_dumps_writes_what_json_writes() -> None:
    frame = {"type": "pong", "data": {"n": 10**30, "t": "é\U0001F600", "l": [1.5, None]}}
    assert dumps(frame) == json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def test_the_protocol_refuses_frames_a_browser_could_not_read() -> None:
    protocol = ClientProtocol("n.1", Credentials("k", "s"))
    for frame in ('{"type":"ping","data":NaN}', '{"type":"ping","data":"\\ud800"}',
                  b'{"type":"ping","data":1e999}', b'\xfe\xff'):
        [action] = protocol.receive(frame)
        assert isinstance(action, Send)
        assert action.error_code == "bad_json"
        dumps(action.frame)  # the error frame itself is sendable
    [pong] = protocol.receive('{"type":"ping","data":18446744073709551616}')
    assert isinstance(pong, Send)
    assert dumps(pong.frame) == '{"type":"pong","data":18446744073709551616}'


def test_presence_channel_data_must_be_strict_json() -> None:
    from channelcast.gateway.auth import sign_channel

    protocol = ClientProtocol("n.1", Credentials("k", "s"))
    good = '{"user_id":"ann","user_info":{"name":"Ann \\ud83d\\ude00"}}'
    for data, ok in ((good, True), ('{"user_id":"ann","user_info":NaN}', False),
                     ('{"user_id":"\\ud800"}', False)):
        frame = json.dumps({"type": "subscribe", "channel": "presence-x", "channel_data": data,
                            "auth": sign_channel("k", "s", "n.1", "presence-x", data)})
        [action] = protocol.receive(frame)
        if ok:
            assert isinstance(action, Subscribe)
            assert action.member is not None
            protocol.subscription_failed(action.channel)
        else:
            assert isinstance(action, Send)
            assert action.error_code == "auth_failed"
            assert "channel_data is not strict JSON" in action.frame["data"]["message"]


def test_a_member_must_be_strict_json() -> None:
    from channelcast.gateway.presence import Member

    assert Member.from_obj({"user_id": "u", "user_info": {"n": "é😀", "big": 10**30}}) == \
        Member("u", {"n": "é😀", "big": 10**30})
    for bad in ({"user_id": "u", "user_info": math.nan}, {"user_id": "u", "user_info": [math.inf]},
                {"user_id": "u", "user_info": "\ud800"}, {"user_id": "\udc00"},
                {"user_id": "u", "user_info": {"\ud800": 1}}):
        assert Member.from_obj(bad) is None, bad


# --- secure by default --------------------------------------------------------------------


def test_demo_mode_is_off_by_default_and_the_write_timeout_is_on() -> None:
    g = GatewaySettings()
    assert g.demo is False
    assert g.write_timeout_s == 10.0


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("", False),
    ("192.0.2.1", False), ("example.org", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def with_gateway(**changes: object) -> Settings:
    from dataclasses import replace

    return Settings(gateway=replace(GatewaySettings(), **changes))  # type: ignore[arg-type]


def test_startup_check_refuses_the_default_secret_off_loopback_and_warns_on_it() -> None:
    with pytest.raises(ConfigError) as caught:
        startup_check(with_gateway(), "0.0.0.0")
    assert caught.value.key == "gateway.app_secret"
    assert "channelcast-secret" not in str(caught.value)
    # Both ways of setting a secret are named.
    assert "in the config file or CHANNELCAST_APP_SECRET" in str(caught.value)
    assert startup_check(with_gateway(app_secret=STRONG), "0.0.0.0") == []
    [secret] = startup_check(with_gateway(), "127.0.0.1")
    assert "default gateway.app_secret" in secret
    demo, _ = startup_check(with_gateway(demo=True), "::1")
    assert demo.startswith("DEMO MODE")
    [demo] = startup_check(with_gateway(demo=True, app_secret=STRONG), "10.0.0.1")
    assert demo.startswith("DEMO MODE")


STRONG = "k" * MIN_SECRET_LENGTH


@pytest.mark.parametrize("secret", ["x", "s3cret", "k" * (MIN_SECRET_LENGTH - 1)])
def test_a_short_secret_is_refused_off_loopback_and_warned_about_on_it(secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        startup_check(with_gateway(app_secret=secret), "0.0.0.0")
    assert caught.value.key == "gateway.app_secret"
    assert f"a secret of {len(secret)} character" in caught.value.problem
    assert "is refused when binding '0.0.0.0'" in caught.value.problem
    assert f"at least {MIN_SECRET_LENGTH}" in caught.value.problem
    [warning] = startup_check(with_gateway(app_secret=secret), "127.0.0.1")
    assert f"has only {len(secret)} character" in warning


# --- config check --json ----------------------------------------------------------------


def test_config_check_json_prints_errors_as_json(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nslow_client_policy = "explode"\n')
    assert main(["config", "check", "--json", "--config", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out) == {"error": {
        "key": "gateway.slow_client_policy",
        "problem": "must be drop-oldest or disconnect, got 'explode'"}}
    assert err == ""
    # Without --json: the one-line error, the same exit code.
    assert main(["config", "check", "--config", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: gateway.slow_client_policy: ")
    missing = tmp_path / "missing.toml"
    assert main(["config", "check", "--json", "-c", str(missing)]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["key"] == str(missing)
    assert "cannot read config file" in error["problem"]
