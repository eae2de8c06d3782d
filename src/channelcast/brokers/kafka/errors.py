"""The one place where confluent-kafka errors become channelcast errors.

Classification uses the error object's own flags and codes (``retriable()``, ``fatal()``,
``code()``), never its message text. Every translated error keeps the original as
``__cause__`` (``raise translate(exc) from exc``).
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from channelcast.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    MessageTooLarge,
    PublishError,
)

# Codes that mean "cannot reach the cluster (in time)", as opposed to "it said no".
_UNREACHABLE = frozenset({
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.REQUEST_TIMED_OUT,
})

# Leadership in motion (a topic created a moment ago, a broker restarting). Some client
# calls (e.g. watermark queries) report these without setting the retriable flag.
_LEADERSHIP = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
})


def kafka_error_of(exc: BaseException | KafkaError) -> KafkaError | None:
    """The KafkaError inside a KafkaException (or the error itself)."""
    if isinstance(exc, KafkaError):
        return exc
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def translate(exc: BaseException | KafkaError, doing: str) -> BrokerError | MessageTooLarge:
    """A channelcast error for a confluent-kafka failure while ``doing`` something.

    Unreachable/timeout codes -> BrokerUnavailable; an oversize message -> MessageTooLarge;
    anything else -> PublishError. ``retriable`` comes from the error's own flag; a
    ``fatal()`` error is never retriable (the client instance is unusable).
    """
    err = kafka_error_of(exc)
    if err is None:
        return PublishError(f"{doing} failed: {exc}")
    code = err.code()
    fatal = err.fatal()
    retriable = (bool(err.retriable()) or code in _LEADERSHIP) and not fatal
    text = f"{doing} failed: {err.name()}: {err.str()}" + (" (fatal)" if fatal else "")
    if code == KafkaError.MSG_SIZE_TOO_LARGE:
        return MessageTooLarge(text)
    if code in _UNREACHABLE and not fatal:
        return BrokerUnavailable(text, retriable=True)
    return PublishError(text, retriable=retriable)


def config_error(exc: BaseException, key: str, doing: str = "creating a Kafka client",
                 ) -> ConfigError | BrokerError | MessageTooLarge:
    """A client refused its configuration (``_INVALID_ARG``): a ConfigError naming the
    settings table it came from; anything else is translated as usual."""
    err = kafka_error_of(exc)
    if err is not None and err.code() == KafkaError._INVALID_ARG:
        return ConfigError(key, f"librdkafka rejected the settings: {err.str()}")
    return translate(exc, doing)


def is_no_offset(exc: BaseException) -> bool:
    err = kafka_error_of(exc)
    return err is not None and err.code() == KafkaError._NO_OFFSET
