"""The one exception tree of channelcast.

Every error the package raises on purpose derives from :class:`ChannelcastError`::

    ChannelcastError
    ├── ConfigError (ValueError)             a config key is missing or wrong; names the key
    ├── InvalidChannel (ValueError)          a channel name breaks the grammar; names the rule
    ├── InvalidPosition (ValueError)         a position string is not topic:partition:offset
    ├── InvalidWorker (ValueError)           a worker's group, channel patterns or handlers
    ├── StrategyError (LookupError)          unknown strategy / partitioner / bad import path
    ├── MessageError (ValueError)
    │   ├── SerializationError               data is not JSON-serializable
    │   ├── MessageTooLarge                  encoded message over the size limit
    │   └── MalformedMessage                 bytes on the wire are not an envelope
    ├── BrokerError
    │   ├── BrokerUnavailable (ConnectionError)  unreachable within the configured timeout
    │   ├── PublishError                     the broker refused a publish: not stored
    │   │   └── PublishOutcomeUnknown        not acknowledged, but may be stored (retriable)
    │   ├── HistoryUnavailable               asked-for offsets were removed by retention
    │   └── BrokerClosed                     the broker was used after close()
    ├── MissingDependency (ImportError)      an optional package or program is not installed
    ├── AuthError (PermissionError)          missing or bad signature (gateway, publish API)
    ├── RequestRefused                       the gateway refuses an HTTP request (status, code)
    ├── ListenFailed (OSError)               the gateway cannot listen on its address
    └── DeliveryFailed (ConnectionError)     an outgoing HTTP call (a Pusher webhook) failed

Errors from dependencies (confluent-kafka) are translated in exactly one place, the Kafka
adapter, with ``raise ... from exc``.
"""

from __future__ import annotations


class ChannelcastError(Exception):
    """Root of every error channelcast raises on purpose."""


class ConfigError(ChannelcastError, ValueError):
    """A configuration value is wrong. ``key`` names it (dotted path or env var)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


class InvalidChannel(ChannelcastError, ValueError):
    """A channel name breaks the channel grammar; the message says which rule."""


class InvalidPosition(ChannelcastError, ValueError):
    """A position string is not ``topic:partition:offset``."""


class InvalidWorker(ChannelcastError, ValueError):
    """``broker.worker(...)`` was given an empty group, a channel pattern no channel can
    match, no handler, or a handler that is not callable; the message names which."""


class StrategyError(ChannelcastError, LookupError):
    """Unknown topic strategy or partitioner, or a custom one that cannot be imported."""


class MessageError(ChannelcastError, ValueError):
    """A message cannot be built, encoded or decoded."""


class SerializationError(MessageError):
    """The data is not JSON-serializable."""


class MessageTooLarge(MessageError):
    """The encoded message is larger than the configured limit."""


class MalformedMessage(MessageError):
    """Bytes read from the broker are not a channelcast envelope."""


class BrokerError(ChannelcastError):
    """The broker failed. ``retriable`` tells whether trying again may help."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


class BrokerUnavailable(BrokerError, ConnectionError):
    """The broker could not be reached within the configured timeout."""


class PublishError(BrokerError):
    """The broker refused a publish: the message was not stored (see the subclass for
    the one case where that is not known)."""


class PublishOutcomeUnknown(PublishError):
    """A publish was not acknowledged, but the broker may have stored it (it was sent and
    no answer came: a timeout, a broken connection with the request in flight).

    Retriable by default. Retry with the *same* message id (``publish(..., id=...)``,
    or the same envelopes for ``publish_many``): the log may then hold the message twice,
    and consumers tell the copies apart by id (docs/brokers.md, "How to retry safely").
    """

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message, retriable=retriable)


class HistoryUnavailable(BrokerError):
    """The requested offsets are gone (retention, bounded memory history): recovery failed."""


class BrokerClosed(BrokerError):
    """The broker (or subscription) was used after it was closed."""


class MissingDependency(ChannelcastError, ImportError):
    """Something installed separately is missing (a package of an optional extra such as
    ``channelcast[bench]``, or a program such as ``java``); the message says how to get it."""


class AuthError(ChannelcastError, PermissionError):
    """A signature is missing, malformed, stale or wrong."""


class RequestRefused(ChannelcastError):
    """The gateway refuses an HTTP request for a reason no other error names (draining,
    no authorizer, a denied subscription, a body over the limit...). ``status`` is the
    HTTP status, ``code`` the error code of the JSON error body (docs/protocol.md)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class DeliveryFailed(ChannelcastError, ConnectionError):
    """An outgoing HTTP delivery (a Pusher webhook POST) failed: unreachable, timed out,
    or answered with a status other than 2xx. Raised to make the worker retry it."""


class ListenFailed(ChannelcastError, OSError):
    """``channelcast serve`` cannot listen on its address: the port is in use, the host
    name does not resolve, or binding is not permitted. The message names the address."""
