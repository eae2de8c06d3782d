"""Operations: library functions behind ``channelcast topics``, ``migrate`` and ``monitor``.

Each module does the work and returns plain dataclasses; the CLI only parses arguments and
prints. Tests call these functions directly. Kafka is reached only through
:mod:`channelcast.brokers.kafka.admin` and :mod:`channelcast.brokers.kafka.reader`.
"""
