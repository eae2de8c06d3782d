"""The one map from confluent-kafka failures to channelcast errors.

Owns every decision about what a Kafka failure *means*: :func:`translate` (an error value
for a failure) and :func:`kafka_errors` (a ``with`` block that raises the translated
error ``from`` the original), plus :func:`has_code` for the few call sites whose control
flow depends on one code (a topic that already exists, no committed offset, ...). Every
module of the adapter (and the benchmark's raw loops) goes through it; none classifies
a Kafka error by itself.

Classification uses the error object's own ``code()``, ``retriable()`` and ``fatal()``,
never its message text. It must never import the rest of the adapter (everything else
imports it), never log and never retry: it only names what happened.

The map, first match wins::

    not a Kafka error
      TimeoutError (a client future)      BrokerUnavailable, retriable
      anything else                       ``refused``, not retriable
    MSG_SIZE_TOO_LARGE                    MessageTooLarge
    ``sent`` (a delivery report), unless
      a _NOT_STORED or _DENIED code       PublishOutcomeUnknown, retriable unless fatal()
    fatal()                               ``refused``, never retriable (client unusable)
    _UNREACHABLE codes                    BrokerUnavailable, retriable
    _INVALID_ARG creating a client        ConfigError naming the settings table
    INVALID_REPLICATION_FACTOR            ConfigError("replication_factor")
    _TOPIC_REJECTED codes                 ConfigError("topic")
    _DENIED codes                         ``refused``, not retriable
    anything else                         ``refused``, retriable if ``retriable()`` or
                                          a _LEADERSHIP code

``refused`` is PublishError unless the caller says otherwise (admin and raw-log calls
pass BrokerError: they publish nothing).

Stored or not: a publish that fails with anything but PublishOutcomeUnknown was not
stored. librdkafka knows a failed message's persistence status (``rd_kafka_message_status``:
NOT_PERSISTED, POSSIBLY_PERSISTED, PERSISTED), but confluent-kafka (2.x, checked with
2.16) does not expose it on ``Message``; the map therefore decides by code alone, and
conservatively: a failure reported for a message produce() accepted (``sent=True``) is
"may be stored" unless its code proves otherwise (see _NOT_STORED). A failure raised by
produce() itself (``sent=False``) never left the process: never stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import KafkaError, KafkaException

from channelcast.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    MessageTooLarge,
    PublishError,
    PublishOutcomeUnknown,
)

__all__ = ["Translated", "has_code", "kafka_error_of", "kafka_errors", "translate"]

Translated = BrokerError | MessageTooLarge | ConfigError
"""What :func:`translate` returns."""

# "Cannot reach the cluster (in time)", as opposed to "it answered no". The union of the
# two sets that had drifted apart: the publish path's also held _MSG_TIMED_OUT (a message
# not acknowledged within message.timeout.ms: from the client's side the cluster did not
# answer in time), the admin path's lacked it only because admin calls produce nothing.
# One set, so "is Kafka down?" has one answer whichever call noticed. A *delivery report*
# with one of these codes is PublishOutcomeUnknown instead (``sent``, see _NOT_STORED):
# the message may have reached the broker before the connection or the clock ran out.
_UNREACHABLE = frozenset({
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.REQUEST_TIMED_OUT,
})

# Leadership in motion (a topic created a moment ago, a broker restarting, a partition
# moving). Some calls (watermark queries, admin offset lists) report these without
# setting the retriable flag; trying again shortly does help. The union of the publish
# path's set and the admin path's "settling" set.
_LEADERSHIP = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.FENCED_LEADER_EPOCH,
    # A partition this client's metadata does not know yet: the topic grew a moment ago
    # (the broker refreshes the client's metadata when it notices; trying again helps).
    KafkaError._UNKNOWN_PARTITION,
})

# The cluster refused a topic as asked (partition count, topic config, a create policy).
_TOPIC_REJECTED = frozenset({
    KafkaError.INVALID_PARTITIONS,
    KafkaError.INVALID_CONFIG,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError.POLICY_VIOLATION,
})

# Delivery-report codes that prove a message produce() accepted was NOT stored. Any other
# delivery failure may hide a stored message, for three reasons: librdkafka marks
# _TRANSPORT, _TIMED_OUT, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND,
# _PURGE_INFLIGHT and _BAD_MSG "possibly persisted" (the request was sent and no verdict
# came back, or the leader appended before replication failed); _MSG_TIMED_OUT
# (message.timeout.ms ran out) is "not persisted" only if no request carrying the message
# was ever sent, which the code alone does not tell; and librdkafka retries internally, so
# a final refusal that is "not persisted" for the last attempt (NOT_ENOUGH_REPLICAS,
# NOT_LEADER_FOR_PARTITION, KAFKA_STORAGE_ERROR...) may follow an earlier attempt whose
# answer was lost. What is left: the client failed the message before sending it
# (_UNKNOWN_TOPIC / _UNKNOWN_PARTITION: no such topic or partition in the metadata,
# _PURGE_QUEUE: purged from the local queue), or the broker refuses these very bytes on
# every attempt (INVALID_RECORD, RECORD_LIST_TOO_LARGE, INVALID_TIMESTAMP;
# MSG_SIZE_TOO_LARGE is matched before; INVALID_MSG, a CRC mismatch, is retried by
# librdkafka as transient, so it is not on the list). Access refusals (_DENIED) are
# checked before a request is processed and do not change between one message's retries:
# not stored either.
_NOT_STORED = frozenset({
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._PURGE_QUEUE,
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_TIMESTAMP,
})

# Credentials or ACLs: trying again with the same client cannot help.
_DENIED = frozenset({
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.DELEGATION_TOKEN_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._AUTHENTICATION,
})


def kafka_error_of(exc: BaseException | KafkaError) -> KafkaError | None:
    """The KafkaError inside a KafkaException (or the error itself); None for others."""
    if isinstance(exc, KafkaError):
        return exc
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def has_code(exc: BaseException | KafkaError, *codes: int) -> bool:
    """Whether ``exc`` is (or wraps) a KafkaError with one of ``codes``."""
    err = kafka_error_of(exc)
    return err is not None and err.code() in codes


def translate(exc: BaseException | KafkaError, doing: str, *, settings: str | None = None,
              refused: type[BrokerError] = PublishError, sent: bool = False) -> Translated:
    """A channelcast error for a confluent-kafka failure while ``doing`` something.

    ``doing`` is a phrase ("publishing", "creating topic x"); every message starts with
    it. ``settings``: the settings table the failing client was configured from
    ("kafka.producer"); given, a configuration the client refused (``_INVALID_ARG``)
    becomes a ConfigError naming it. ``refused``: the BrokerError subclass for a failure
    with no more specific class. ``sent``: ``exc`` is the delivery report of a message
    produce() accepted, so it may have reached the broker (PublishOutcomeUnknown unless
    the code proves it was not stored). The caller raises the result ``from exc``. The
    table in the module docstring is the whole map.
    """
    err = kafka_error_of(exc)
    if err is None:
        if isinstance(exc, TimeoutError):  # a client future not done in time
            return BrokerUnavailable(f"{doing} failed: no answer from Kafka in time",
                                     retriable=True)
        return refused(f"{doing} failed: {exc}")
    code = err.code()
    text = f"{doing} failed: {err.name()}: {err.str()}"
    if code == KafkaError.MSG_SIZE_TOO_LARGE:
        return MessageTooLarge(text)
    if sent and code not in _NOT_STORED and code not in _DENIED:
        fatal = bool(err.fatal())
        return PublishOutcomeUnknown(
            f"{doing} failed: not acknowledged ({err.name()}: {err.str()}), but the message "
            "may be stored: retry with the same message id"
            + (" (fatal: this Kafka client cannot be used any more)" if fatal else ""),
            retriable=not fatal)
    if err.fatal():
        return refused(f"{text} (fatal: this Kafka client cannot be used any more)")
    if code in _UNREACHABLE:
        return BrokerUnavailable(
            f"{doing} failed: Kafka is unreachable ({err.name()}: {err.str()})",
            retriable=True)
    if code == KafkaError._INVALID_ARG and settings is not None:
        return ConfigError(settings, f"{doing} failed: librdkafka rejected the settings: "
                                     f"{err.str()}")
    if code == KafkaError.INVALID_REPLICATION_FACTOR:
        return ConfigError("replication_factor", text)
    if code in _TOPIC_REJECTED:
        return ConfigError("topic", text)
    if code in _DENIED:
        return refused(f"{text} (access denied: check the client's credentials and ACLs)")
    return refused(text, retriable=bool(err.retriable()) or code in _LEADERSHIP)


@contextmanager
def kafka_errors(doing: str, *, settings: str | None = None,
                 refused: type[BrokerError] = PublishError) -> Iterator[None]:
    """``with kafka_errors("creating topics"): ...``: a KafkaException (or a client
    future's TimeoutError) raised inside leaves as :func:`translate`'s error, raised
    ``from`` the original. Anything else passes through untouched. Arguments as for
    :func:`translate`."""
    try:
        yield
    except (KafkaException, TimeoutError) as exc:
        raise translate(exc, doing, settings=settings, refused=refused) from exc
