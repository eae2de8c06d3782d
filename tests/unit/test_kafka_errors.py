"""The one Kafka error map (channelcast.brokers.kafka.errors), without a broker.

``KafkaError(code)`` objects are plain values: building them opens no socket. Every code
the code base names anywhere under src/ is fed to the map here (a test below keeps that
list complete).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from channelcast.brokers.kafka.errors import has_code, kafka_errors, translate
from channelcast.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    MessageTooLarge,
    PublishError,
    PublishOutcomeUnknown,
)

SRC = Path(__file__).resolve().parents[2] / "src"
DOING = "creating topic t-42"

UNREACHABLE = [
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.REQUEST_TIMED_OUT,
]
LEADERSHIP = [
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.FENCED_LEADER_EPOCH,
]
TOPIC_REJECTED = [
    KafkaError.INVALID_PARTITIONS,
    KafkaError.INVALID_CONFIG,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError.POLICY_VIOLATION,
]
DENIED = [
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.DELEGATION_TOKEN_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._AUTHENTICATION,
]
# Codes call sites act on with has_code() (skip, or treat as done); translated, they are
# plain refusals.
PLAIN = [
    KafkaError.TOPIC_ALREADY_EXISTS,
    KafkaError._NO_OFFSET,
    KafkaError._PARTITION_EOF,
]
OTHERS = [KafkaError.MSG_SIZE_TOO_LARGE, KafkaError._INVALID_ARG,
          KafkaError.INVALID_REPLICATION_FACTOR]
# Delivery reports that prove the message was not stored (failed before it was sent, or
# bytes the broker refuses on every attempt).
NOT_STORED = [
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._PURGE_QUEUE,
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_TIMESTAMP,
]
# Delivery reports librdkafka itself calls "possibly persisted", or that may follow an
# attempt whose answer was lost: the outcome is unknown.
MAY_BE_STORED = [
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError._PURGE_INFLIGHT,
    KafkaError._BAD_MSG,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.KAFKA_STORAGE_ERROR,
    KafkaError.INVALID_MSG,
    KafkaError._ALL_BROKERS_DOWN,
]
EVERY_CODE = (UNREACHABLE + LEADERSHIP + TOPIC_REJECTED + DENIED + PLAIN + OTHERS
              + NOT_STORED + MAY_BE_STORED)

REFUSED = [PublishError, BrokerError]


def _name(code: int) -> str:
    return str(KafkaError(code).name())


def test_every_code_the_source_names_is_covered_here() -> None:
    named = set()
    for path in SRC.rglob("*.py"):
        named.update(re.findall(r"KafkaError\.([A-Z_][A-Z0-9_]*)",
                                path.read_text(encoding="utf-8")))
    assert named, "the scan found nothing: the pattern or the path is wrong"
    covered = {_name(code) for code in EVERY_CODE}
    assert named <= covered, f"not fed to the map by these tests: {sorted(named - covered)}"


@pytest.mark.parametrize("refused", REFUSED)
@pytest.mark.parametrize("code", UNREACHABLE, ids=_name)
def test_unreachable_codes_are_retriable_broker_unavailable(code: int,
                                                            refused: type[BrokerError]) -> None:
    out = translate(KafkaError(code, "gone"), DOING, refused=refused)
    assert type(out) is BrokerUnavailable
    assert out.retriable
    assert str(out).startswith(f"{DOING} failed: Kafka is unreachable")
    assert _name(code) in str(out)


@pytest.mark.parametrize("refused", REFUSED)
@pytest.mark.parametrize("code", LEADERSHIP, ids=_name)
def test_leadership_in_motion_is_retriable_without_the_flag(code: int,
                                                            refused: type[BrokerError]) -> None:
    out = translate(KafkaError(code, "moving", retriable=False), DOING, refused=refused)
    assert type(out) is refused
    assert out.retriable
    assert DOING in str(out)


@pytest.mark.parametrize("code", TOPIC_REJECTED, ids=_name)
def test_a_rejected_topic_is_a_config_error_about_the_topic(code: int) -> None:
    out = translate(KafkaError(code, "no such config"), DOING, refused=BrokerError)
    assert type(out) is ConfigError
    assert out.key == "topic"
    assert DOING in str(out)
    assert "no such config" in str(out)


def test_a_bad_replication_factor_is_a_config_error_naming_it() -> None:
    out = translate(KafkaError(KafkaError.INVALID_REPLICATION_FACTOR, "rf 3 > 1 broker"),
                    DOING, refused=BrokerError)
    assert type(out) is ConfigError
    assert out.key == "replication_factor"
    assert DOING in str(out)
    assert "rf 3 > 1 broker" in str(out)


@pytest.mark.parametrize("refused", REFUSED)
@pytest.mark.parametrize("code", DENIED, ids=_name)
def test_denied_access_is_never_retriable(code: int, refused: type[BrokerError]) -> None:
    out = translate(KafkaError(code, "denied", retriable=True), DOING, refused=refused)
    assert type(out) is refused
    assert not out.retriable
    assert DOING in str(out)
    assert "access denied" in str(out)


@pytest.mark.parametrize("refused", REFUSED)
@pytest.mark.parametrize("code", PLAIN, ids=_name)
def test_other_codes_are_refusals_with_the_flag_they_carry(code: int,
                                                           refused: type[BrokerError]) -> None:
    out = translate(KafkaError(code, "said no"), DOING, refused=refused)
    assert type(out) is refused
    assert not out.retriable
    assert str(out) == f"{DOING} failed: {_name(code)}: said no"
    flagged = translate(KafkaError(code, "said no", retriable=True), DOING, refused=refused)
    assert isinstance(flagged, BrokerError)
    assert flagged.retriable


def test_an_oversize_message_is_message_too_large() -> None:
    out = translate(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too big"), "publishing")
    assert type(out) is MessageTooLarge
    assert not isinstance(out, BrokerError)
    assert str(out).startswith("publishing failed")


def test_invalid_arg_while_creating_a_client_names_the_settings_table() -> None:
    err = KafkaError(KafkaError._INVALID_ARG, "No such configuration property: \"x\"")
    out = translate(KafkaException(err), "creating the producer", settings="kafka.producer")
    assert type(out) is ConfigError
    assert out.key == "kafka.producer"
    assert str(out).startswith("kafka.producer: creating the producer failed")
    assert "librdkafka rejected the settings" in str(out)
    # Outside client creation (no settings table) it is a plain refusal.
    plain = translate(err, "publishing")
    assert type(plain) is PublishError
    assert not plain.retriable


@pytest.mark.parametrize("code", [KafkaError._TRANSPORT, KafkaError.LEADER_NOT_AVAILABLE,
                                  KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER], ids=_name)
def test_a_fatal_error_is_never_retriable(code: int) -> None:
    out = translate(KafkaError(code, "broken", fatal=True, retriable=True), DOING)
    assert type(out) is PublishError
    assert not out.retriable
    assert "fatal" in str(out)
    assert DOING in str(out)


def test_a_kafka_exception_is_translated_like_the_error_it_wraps() -> None:
    for code in EVERY_CODE:
        err = KafkaError(code, "x")
        wrapped = translate(KafkaException(err), DOING, settings="kafka.consumer")
        bare = translate(err, DOING, settings="kafka.consumer")
        assert (type(wrapped), str(wrapped), getattr(wrapped, "retriable", None)) == (
            type(bare), str(bare), getattr(bare, "retriable", None)), _name(code)


def test_a_non_kafka_exception_is_a_refusal_naming_what_was_done() -> None:
    out = translate(ValueError("bad argument"), DOING)
    assert type(out) is PublishError
    assert not out.retriable
    assert str(out) == f"{DOING} failed: bad argument"
    assert type(translate(ValueError("x"), DOING, refused=BrokerError)) is BrokerError
    # A KafkaException carrying text instead of a KafkaError is not a known code either.
    assert type(translate(KafkaException("odd"), DOING, refused=BrokerError)) is BrokerError


def test_a_client_future_timing_out_is_retriable_broker_unavailable() -> None:
    out = translate(TimeoutError(), DOING, refused=BrokerError)
    assert type(out) is BrokerUnavailable
    assert out.retriable
    assert str(out) == f"{DOING} failed: no answer from Kafka in time"


def test_the_context_manager_raises_the_translation_from_the_original() -> None:
    original = KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all down"))
    with pytest.raises(BrokerUnavailable, match=f"^{DOING} failed") as info, \
            kafka_errors(DOING):
        raise original
    assert info.value.__cause__ is original
    assert info.value.retriable

    with pytest.raises(ConfigError, match=r"^kafka\.consumer: ") as config, \
            kafka_errors("creating the consumer", settings="kafka.consumer"):
        raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "bad"))
    assert isinstance(config.value.__cause__, KafkaException)

    timeout = TimeoutError()
    with pytest.raises(BrokerUnavailable) as timed_out, kafka_errors(DOING):
        raise timeout
    assert timed_out.value.__cause__ is timeout


def test_the_context_manager_lets_everything_else_through() -> None:
    with pytest.raises(ValueError, match="not kafka"), kafka_errors(DOING):
        raise ValueError("not kafka")
    ours = BrokerUnavailable("already translated", retriable=True)
    with pytest.raises(BrokerUnavailable) as info, kafka_errors(DOING):
        raise ours
    assert info.value is ours
    with kafka_errors(DOING):
        pass  # and nothing happens when nothing fails


def test_has_code_looks_inside_a_kafka_exception() -> None:
    err = KafkaError(KafkaError.TOPIC_ALREADY_EXISTS, "exists")
    assert has_code(err, KafkaError.TOPIC_ALREADY_EXISTS)
    assert has_code(KafkaException(err), KafkaError._NO_OFFSET,
                    KafkaError.TOPIC_ALREADY_EXISTS)
    assert not has_code(KafkaException(err), KafkaError._NO_OFFSET)
    assert not has_code(ValueError("x"), KafkaError.TOPIC_ALREADY_EXISTS)


# --- "not stored" against "may be stored" (delivery reports: sent=True) ----------------


def test_outcome_unknown_is_a_retriable_publish_error() -> None:
    err = PublishOutcomeUnknown("no ack")
    assert isinstance(err, PublishError)
    assert err.retriable
    assert not PublishOutcomeUnknown("no ack", retriable=False).retriable


@pytest.mark.parametrize("code", MAY_BE_STORED, ids=_name)
def test_a_delivery_failure_that_may_hide_a_stored_message_is_outcome_unknown(
        code: int) -> None:
    out = translate(KafkaError(code, "no verdict"), "publishing", sent=True)
    assert type(out) is PublishOutcomeUnknown
    assert out.retriable
    assert str(out).startswith("publishing failed: not acknowledged")
    assert _name(code) in str(out)
    assert "may be stored" in str(out)
    assert "same message id" in str(out)
    # Raised by a call (nothing was sent), the same code is not an unknown outcome.
    assert not isinstance(translate(KafkaError(code, "x"), "publishing"),
                          PublishOutcomeUnknown)


@pytest.mark.parametrize("code", NOT_STORED + DENIED, ids=_name)
def test_a_delivery_failure_that_proves_nothing_was_stored_keeps_its_class(code: int) -> None:
    sent = translate(KafkaError(code, "refused"), "publishing", sent=True)
    unsent = translate(KafkaError(code, "refused"), "publishing")
    assert not isinstance(sent, PublishOutcomeUnknown)
    assert isinstance(sent, PublishError)
    assert (type(sent), str(sent), sent.retriable) == (type(unsent), str(unsent),
                                                       unsent.retriable)


def test_a_delivered_oversize_refusal_is_message_too_large() -> None:
    out = translate(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "big"), "publishing", sent=True)
    assert type(out) is MessageTooLarge


def test_a_fatal_delivery_failure_is_outcome_unknown_and_not_retriable() -> None:
    err = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "broken", fatal=True)
    out = translate(err, "publishing", sent=True)
    assert type(out) is PublishOutcomeUnknown
    assert not out.retriable
    assert "fatal" in str(out)


def test_every_code_is_either_stored_maybe_or_not_when_sent() -> None:
    for code in EVERY_CODE:
        out = translate(KafkaError(code, "x"), "publishing", sent=True)
        if code in NOT_STORED or code in DENIED or code == KafkaError.MSG_SIZE_TOO_LARGE:
            assert not isinstance(out, PublishOutcomeUnknown), _name(code)
        else:
            assert isinstance(out, PublishOutcomeUnknown), _name(code)
