"""The Pusher Channels protocol v7, beside the native one: pusher-js, Laravel Echo and the
Pusher server SDKs work against channelcast unchanged (docs/pusher.md).

Modules: :mod:`.apps` (apps from config), :mod:`.names` (Pusher channel names <->
channelcast's, per app), :mod:`.signatures` (channel, sign-in, HTTP API and webhook
signatures), :mod:`.records` (how a Pusher event is stored), :mod:`.protocol` (sans-I/O
:class:`~.protocol.PusherProtocol`, a ``WireProtocol``), :mod:`.cluster` (cluster-wide
counts and transitions through the broker), :mod:`.webhooks`, :mod:`.node` (the Pusher side
of a gateway node), :mod:`.session` (the ``/app/{key}`` WebSocket) and :mod:`.http` (the
``/apps/{id}/...`` HTTP API). This package imports nothing of its own at import time.
"""
