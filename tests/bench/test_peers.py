"""The peers comparison without a network: config writers, the client protocols' frames,
the peers folder and "not run" handling, the report and its targets, the command line."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from channelcast.bench import BenchConfig, MemoryTarget
from channelcast.bench.model import PEER_SCENARIOS, SCENARIOS
from channelcast.bench.peers import install
from channelcast.bench.peers.configs import (
    CENTRIFUGO_CHANNELS_HEADER,
    PusherApp,
    centrifugo_config,
    gateway_config,
    sockudo_config,
)
from channelcast.bench.peers.fleet import negotiated
from channelcast.bench.peers.model import (
    CPU_US_PER_DELIVERY,
    DELIVERIES_PER_S,
    FANOUT,
    KAFKA_BROWSER,
    MSG_PER_S,
    P99_MS,
    PUBLISH,
    PeerResult,
    PeerRun,
    PeersResults,
)
from channelcast.bench.peers.process import cpu_seconds, minimal_env
from channelcast.bench.peers.publish import CHANNELCAST, FASTSTREAM_AIOKAFKA, FASTSTREAM_CONFLUENT
from channelcast.bench.peers.report import (
    cell,
    check_peer_targets,
    render_markdown,
    write_peer_outputs,
)
from channelcast.bench.peers.runner import NEEDS_KAFKA, run_peers
from channelcast.bench.peers.wire import (
    CHROMIUM_EXTENSIONS,
    Handshake,
    ProtocolError,
    keepalive_reply,
    pusher_event,
    pusher_path,
    pusher_signed_query,
    stamps,
)
from channelcast.cli import bench as bench_command
from channelcast.cli.main import main
from channelcast.config import load_settings

ROOT = Path(__file__).resolve().parents[2]


# --- config writers ---------------------------------------------------------------------


def test_centrifugo_config_listens_on_loopback_and_lets_anonymous_clients_subscribe() -> None:
    config = centrifugo_config(18000, "k")
    assert config["http_server"] == {"address": "127.0.0.1", "port": 18000}
    assert config["engine"] == {"type": "memory"}
    assert config["http_api"]["key"] == "k"
    assert config["client"]["allow_anonymous_connect_without_token"] is True
    assert config["client"]["allowed_origins"] == ["http://127.0.0.1:18000"]
    channels = config["channel"]["without_namespace"]
    assert channels["allow_subscribe_for_client"] is True
    assert channels["allow_subscribe_for_anonymous"] is True
    assert config["usage_stats"] == {"disabled": True}
    assert "consumers" not in config


def test_centrifugo_kafka_consumer_is_in_publication_data_mode() -> None:
    config = centrifugo_config(18000, "k", kafka_brokers="127.0.0.1:1, 127.0.0.1:2",
                               kafka_topic="t", consumer_group="g")
    (consumer,) = config["consumers"]
    assert (consumer["type"], consumer["enabled"]) == ("kafka", True)
    kafka = consumer["kafka"]
    assert kafka["brokers"] == ["127.0.0.1:1", "127.0.0.1:2"]
    assert (kafka["topics"], kafka["consumer_group"]) == (["t"], "g")
    assert kafka["publication_data_mode"] == {"enabled": True,
                                              "channels_header": CENTRIFUGO_CHANNELS_HEADER}
    with pytest.raises(ValueError, match="kafka_brokers"):
        centrifugo_config(18000, "k", kafka_topic="t")


def test_sockudo_config_is_one_local_app_without_rate_limits() -> None:
    app = PusherApp("i", "k", "s")
    config = sockudo_config(6001, app)
    assert (config["host"], config["port"]) == ("127.0.0.1", 6001)
    assert config["adapter"] == {"driver": "local"}
    assert config["app_manager"]["driver"] == "memory"
    assert config["app_manager"]["array"]["apps"] == [
        {"id": "i", "key": "k", "secret": "s", "enabled": True}]
    # Its defaults would refuse the 21st connection from one IP, need Redis for the
    # webhook queue and open a metrics port.
    assert config["rate_limiter"] == {"enabled": False}
    assert config["queue"] == {"driver": "none"}
    assert config["metrics"] == {"enabled": False}
    json.dumps(config)  # written as JSON


@pytest.mark.parametrize("broker", ["memory://", "kafka://127.0.0.1:9"])
def test_gateway_config_is_valid_channelcast_settings(broker: str, tmp_path: Path) -> None:
    path = tmp_path / "channelcast.yaml"
    path.write_text(yaml.safe_dump(gateway_config(
        broker, app_key="k", app_secret="s", send_queue=300, kafka_brokers="127.0.0.1:9",
        default_topic="bench.t")))
    settings = load_settings(path, env={})
    assert settings.broker == broker
    assert settings.gateway.host == "127.0.0.1"
    assert (settings.gateway.app_key, settings.gateway.send_queue) == ("k", 300)
    assert settings.gateway.demo is False
    if broker.startswith("kafka"):
        assert settings.kafka.default_topic == "bench.t"
        assert settings.kafka.default_partitions == 1


# --- client protocols ---------------------------------------------------------------------


def _drive(shake: Handshake, frames: list[str]) -> list[str]:
    sent = shake.start()
    for frame in frames:
        sent += shake.receive(frame)
    return sent


def test_channelcast_handshake() -> None:
    shake = Handshake("channelcast", "fanout.0")
    sent = _drive(shake, ['{"type":"connected","data":{"connection_id":"c","protocol":1}}'])
    assert [json.loads(s) for s in sent] == [{"type": "subscribe", "channel": "fanout.0"}]
    assert not shake.done
    shake.receive('{"type":"subscribed","channel":"fanout.0","data":{"position":null}}')
    assert shake.done
    with pytest.raises(ProtocolError):
        Handshake("channelcast", "x").receive('{"type":"error","data":{"code":"bad"}}')


def test_centrifugo_handshake_answers_pings_and_reads_several_replies_per_frame() -> None:
    shake = Handshake("centrifugo", "fanout.0")
    assert [json.loads(s) for s in shake.start()] == [{"id": 1, "connect": {}}]
    assert shake.receive("{}") == ["{}"]  # the server's ping
    sent = shake.receive('{"id":1,"connect":{"client":"c","ping":25,"pong":true}}')
    assert [json.loads(s) for s in sent] == [{"id": 2, "subscribe": {"channel": "fanout.0"}}]
    shake.receive('{"id":2,"subscribe":{}}\n{"push":{"channel":"fanout.0","pub":{}}}')
    assert shake.done
    refused = Handshake("centrifugo", "x")
    refused.start()
    refused.receive('{"id":1,"connect":{}}')
    with pytest.raises(ProtocolError, match="permission denied"):
        refused.receive('{"id":2,"error":{"code":103,"message":"permission denied"}}')


def test_pusher_handshake() -> None:
    shake = Handshake("pusher", "fanout.0")
    assert shake.start() == []
    sent = shake.receive('{"event":"pusher:connection_established",'
                         '"data":"{\\"socket_id\\":\\"1.2\\",\\"activity_timeout\\":120}"}')
    assert [json.loads(s) for s in sent] == [
        {"event": "pusher:subscribe", "data": {"channel": "fanout.0"}}]
    assert [json.loads(s) for s in shake.receive('{"event":"pusher:ping","data":{}}')] == [
        {"event": "pusher:pong", "data": {}}]
    shake.receive('{"event":"pusher_internal:subscription_succeeded","channel":"fanout.0",'
                  '"data":"{}"}')
    assert shake.done
    with pytest.raises(ProtocolError):
        Handshake("pusher", "x").receive('{"event":"pusher:error","data":{"code":4001}}')


def test_plain_needs_no_handshake() -> None:
    shake = Handshake("plain", "x")
    assert shake.start() == []
    assert shake.done


def test_stamps_are_read_from_every_protocol() -> None:
    data = '{"t":123456789012,"r":2,"p":"abc"}'
    channelcast = '{"type":"message","channel":"c","event":"e","data":' + data + "}"
    centrifugo = "\n".join('{"push":{"channel":"c","pub":{"data":' + data.replace("2", str(r), 1)
                           + "}}}" for r in (1, 2))
    pusher = json.dumps(pusher_event("c", "e", json.loads(data)), separators=(",", ":"))
    assert '\\"t\\"' in pusher  # Pusher's data is a string: the stamp arrives escaped
    assert stamps(channelcast) == [(123456789012, 2)]
    assert stamps(pusher) == [(123456789012, 2)]
    assert len(stamps(centrifugo)) == 2  # several publications in one frame
    assert stamps('{"type":"subscribed","channel":"c"}') == []


def test_keepalive_replies_only_to_pings() -> None:
    assert keepalive_reply("centrifugo", "{}") == "{}"
    assert keepalive_reply("centrifugo", '{"push":{}}') is None
    assert json.loads(keepalive_reply("pusher", '{"event":"pusher:ping","data":{}}') or "") \
        == {"event": "pusher:pong", "data": {}}
    assert keepalive_reply("pusher", '{"event":"bench","data":"{}"}') is None
    assert keepalive_reply("channelcast", "{}") is None


def test_pusher_signature_matches_the_pusher_documentation_example() -> None:
    # The worked example of the Pusher HTTP API reference (key, secret, body, timestamp
    # and the resulting body_md5 and signature).
    body = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
    query = pusher_signed_query("POST", "/apps/3/events", body, "278d425bdf160c739803",
                                "7ad3773142a6692b25b8", timestamp=1353088179)
    params = dict(p.split("=", 1) for p in query.split("&"))
    assert params["body_md5"] == "ec365a775a4cd0599faeb73354201b6f"
    assert params["auth_signature"] == (
        "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c")
    assert pusher_path("k").startswith("/app/k?protocol=7")


def test_chromium_offer_is_exactly_chromiums() -> None:
    from channelcast.bench.fanout_client import chromium_deflate_offer, origin_of

    assert chromium_deflate_offer().get_request_params() == [
        ("client_max_window_bits", None)]
    assert CHROMIUM_EXTENSIONS == "permessage-deflate; client_max_window_bits"
    assert origin_of("ws://127.0.0.1:8000/ws") == "http://127.0.0.1:8000"


def test_negotiated_extensions_are_counted() -> None:
    assert negotiated({"extensions": {"": 20}}) == "none (20/20)"
    assert negotiated({"extensions": {"permessage-deflate; client_max_window_bits=15": 3,
                                      "": 1}}) == (
        "permessage-deflate; client_max_window_bits=15 (3/4) | none (1/4)")


# --- the peers folder and "not run" ---------------------------------------------------------


def test_default_peers_dir() -> None:
    assert install.default_peers_dir({"CHANNELCAST_PEERS_DIR": "/x/p"}) == Path("/x/p")
    assert install.default_peers_dir({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path(
        "/c/channelcast/peers")
    assert install.default_peers_dir({"HOME": "/h"}) == Path("/h/.cache/channelcast/peers")


def _fake_binary(path: Path, exit_code: int) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_a_missing_binary_says_where_it_was_looked_for_and_how_to_build_it(
        tmp_path: Path) -> None:
    for peer in (install.find_centrifugo(tmp_path), install.find_sockudo(tmp_path)):
        assert not peer.found
        assert str(tmp_path) in peer.missing
        assert "scripts/bench-peers" in peer.missing


def test_a_built_binary_is_found_and_a_broken_one_is_not(tmp_path: Path) -> None:
    _fake_binary(install.centrifugo_binary(tmp_path), 0)
    _fake_binary(install.sockudo_binary(tmp_path), 3)
    centrifugo = install.find_centrifugo(tmp_path)
    assert (centrifugo.found, centrifugo.version) == (True, install.CENTRIFUGO_VERSION)
    sockudo = install.find_sockudo(tmp_path)
    assert not sockudo.found
    assert "does not run" in sockudo.missing


def test_a_missing_python_peer_names_the_extra() -> None:
    peer = install.find_python_peer("x", "no-such-distribution-channelcast")
    assert not peer.found
    assert "channelcast[peers]" in peer.missing


def test_the_script_builds_the_layout_the_package_reads() -> None:
    script = (ROOT / "scripts" / "bench-peers").read_text()
    assert f"CENTRIFUGO_VERSION={install.CENTRIFUGO_VERSION}\n" in script
    assert f"SOCKUDO_VERSION={install.SOCKUDO_VERSION}\n" in script
    assert install.PEERS_DIR_ENV in script
    assert 'centrifugo_dir="$dir/centrifugo-$CENTRIFUGO_VERSION"' in script
    assert 'GOBIN="$centrifugo_dir"' in script
    assert 'sockudo_dir="$dir/sockudo-$SOCKUDO_VERSION"' in script
    assert '--root "$sockudo_dir"' in script  # cargo puts the binary in <root>/bin
    assert install.sockudo_binary(Path("/p")) == Path("/p/sockudo-5.2.0/bin/sockudo")
    assert re.search(r"--no-default-features\s+\\?\s*--features local --locked", script)


def test_without_kafka_the_kafka_scenarios_are_reported_not_run(tmp_path: Path) -> None:
    config = BenchConfig.quick(scenarios=("peers-publish", "peers-kafka-browser"))
    results = asyncio.run(run_peers(MemoryTarget(), config, tmp_path))
    assert results.errors == []
    assert [(r.scenario, r.not_run) for r in results.results] == [
        (PUBLISH, NEEDS_KAFKA), (KAFKA_BROWSER, NEEDS_KAFKA)]
    assert "Centrifugo" in results.machine
    assert "not found" in results.machine["sockudo"]
    text = render_markdown(results)
    assert f"not run: {NEEDS_KAFKA}" in text


def test_server_environment_is_minimal_with_absolute_pythonpath(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYTHONPATH", "src")
    monkeypatch.setenv("PORT", "1")  # sockudo would read it
    env = minimal_env(home=tmp_path)
    assert env["PYTHONPATH"] == os.path.abspath("src")
    assert env["HOME"] == str(tmp_path)
    assert "PORT" not in env
    assert cpu_seconds(os.getpid()) > 0


# --- the report ---------------------------------------------------------------------------


def _result(scenario: str, name: str, figure: str, values: list[float],
            channelcast: bool = False) -> PeerResult:
    return PeerResult(scenario, name, "1.0", channelcast, "s", negotiated="none (2/2)",
                      runs=[PeerRun({figure: v}, "n", "1.00") for v in values])


def _results() -> PeersResults:
    config = BenchConfig.quick(run_id="p33r", repeat=3)
    fan = [
        PeerResult(FANOUT, "channelcast gateway", "0.1", True, "s", runs=[
            PeerRun({DELIVERIES_PER_S: d, CPU_US_PER_DELIVERY: c})
            for d, c in ((70.0, 3.0), (80.0, 2.0), (90.0, 4.0))]),
        PeerResult(FANOUT, "Centrifugo", "6.9.1", runs=[
            PeerRun({DELIVERIES_PER_S: d, CPU_US_PER_DELIVERY: c})
            for d, c in ((100.0, 2.0), (100.0, 2.0), (200.0, 2.0))]),
        PeerResult(FANOUT, "plain websockets broadcast", "17", runs=[
            PeerRun({DELIVERIES_PER_S: 10.0, CPU_US_PER_DELIVERY: 1.0})]),
        PeerResult(FANOUT, "sockudo", not_run="not built"),
    ]
    pub = [_result(PUBLISH, CHANNELCAST, MSG_PER_S, [200.0, 300.0, 250.0], True),
           _result(PUBLISH, FASTSTREAM_CONFLUENT, MSG_PER_S, [50.0]),
           _result(PUBLISH, FASTSTREAM_AIOKAFKA, MSG_PER_S, [120.0, 125.0, 130.0]),
           _result(PUBLISH, "broadcaster publish() (kafka://)", MSG_PER_S, [1000.0])]
    k2b = [_result(KAFKA_BROWSER, "Centrifugo", P99_MS, [10.0]),
           PeerResult(KAFKA_BROWSER, "channelcast gateway", channelcast=True,
                      errors=["run 1: PeerFailed: x"])]
    return PeersResults(config=config, broker="kafka://x", peers_dir="/p",
                        machine={"cpus": "2"}, results=fan + pub + k2b)


def test_targets_compare_medians_with_the_best_peer() -> None:
    checks = {t.name: t for t in check_peer_targets(_results())}
    fan = checks["fan-out deliveries/s >= 0.7x the best peer's"]
    # Median 80 against Centrifugo's median 100 (the best peer; the plain loop's 10 and
    # sockudo, not run, are not it).
    assert fan.met is True
    assert fan.measured.startswith("0.80x (channelcast gateway 80 against Centrifugo 100")
    cpu = checks["fan-out server CPU per delivery <= 1.5x the best peer's"]
    assert cpu.measured.startswith("3.00x")  # 3.0 against the plain loop's 1.0
    assert cpu.met is False
    publish = checks["publish_many() msg/s >= 2x FastStream's (its faster batch path)"]
    # 250 against FastStream's faster path (aiokafka, 125); broadcaster is not FastStream.
    assert publish.measured.startswith("2.00x")
    assert publish.met is True
    k2b = checks["Kafka-to-browser p99 <= the best peer's"]
    assert (k2b.met, k2b.measured) == (None, "n/a (channelcast did not run)")


def test_report_tables_show_versions_medians_spread_and_not_run_rows() -> None:
    text = render_markdown(_results())
    assert "| **channelcast gateway** | 0.1 |" in text
    assert "80 (70–90)" in text  # median (min–max) of three runs
    assert "| sockudo | — | — | not run: not built |" in text
    assert "failed** run 1: PeerFailed: x" in text
    assert "| fan-out deliveries/s >= 0.7x the best peer's |" in text
    assert "**no**" in text
    assert "| yes |" in text


def test_cell_formats_one_run_without_spread() -> None:
    result = _result(PUBLISH, "x", MSG_PER_S, [1234.0])
    assert cell(result, MSG_PER_S) == "1,234"
    assert cell(result, P99_MS) == "n/a"
    assert math.isnan(result.median(P99_MS))


def test_outputs_are_written(tmp_path: Path) -> None:
    paths = write_peer_outputs(_results(), tmp_path / "run")
    assert paths["report"].read_text().startswith("# channelcast bench --peers: run p33r")
    data = json.loads(paths["json"].read_text())
    assert {t["name"] for t in data["targets"]} >= {
        "Kafka-to-browser p99 <= the best peer's"}
    assert paths["plot"].stat().st_size > 10_000


# --- the command line ----------------------------------------------------------------------


def test_command_line_names_agree_with_the_package() -> None:
    assert bench_command.PEER_SCENARIO_NAMES == PEER_SCENARIOS
    assert bench_command.PEERS_DIR_ENV == install.PEERS_DIR_ENV
    assert not set(PEER_SCENARIOS) & set(SCENARIOS)


@pytest.mark.parametrize(("args", "message"), [
    (["--scenarios", "peers-fanout"], "peers-* need --peers"),
    (["--peers", "--scenarios", "fanout"], "not a scenario of --peers"),
])
def test_scenarios_must_belong_to_the_mode(args: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    assert main(["bench", "--quick", "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_peers_without_kafka_reports_the_kafka_scenarios_not_run(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # No servers are started: the scenario list leaves only the Kafka ones.
    code = main(["bench", "--peers", "--quick", "--scenarios", "peers-kafka-browser",
                 "--peers-dir", str(tmp_path / "none"), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"peers-kafka-browser: not run: {NEEDS_KAFKA}" in out
    (folder,) = tmp_path.glob("*-peers")
    assert (folder / "peers.png").exists()
