"""``channelcast bench --peers``: channelcast side by side with what a user would pick
instead, in one run on one machine.

Three scenarios (:data:`PEER_SCENARIOS`): ``peers-fanout`` (:mod:`.fanout`: the gateway,
Centrifugo, sockudo and a plain ``websockets`` broadcast loop to the same WebSocket
clients), ``peers-publish`` (:mod:`.publish`: ``publish_many`` against FastStream's batch
publish, broadcaster's Kafka backend and the raw confluent-kafka loops) and
``peers-kafka-browser`` (:mod:`.kafka_browser`: from a Kafka record to a WebSocket client,
channelcast's gateway against Centrifugo's Kafka consumer). :func:`run_peers` runs them,
:func:`peers_bench` also writes the report (:mod:`.report`).

The peers come from a folder that ``scripts/bench-peers`` fills (:mod:`.install`) and
from the ``peers`` extra; one that is missing is reported as "not run: <why>", never a
crash. Every server runs as a process of its own on 127.0.0.1 with a config written to a
temp folder (:mod:`.configs`, :mod:`.servers`) and is always stopped (:mod:`.process`).
This package must never build or download a peer, and importing it must stay cheap
(the fan-out client process imports :mod:`.wire`): the scenario modules, which import
the peers' libraries, are imported only when they run.
"""

from __future__ import annotations

from channelcast.bench.model import PEER_SCENARIOS

__all__ = ["PEER_SCENARIOS"]
