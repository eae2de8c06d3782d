"""The realtime gateway: WebSocket/SSE clients, HTTP publish API, presence, fan-out.

Layers: :mod:`.protocol` (sans-I/O frames and actions), :mod:`.presence` (sans-I/O presence
state), :mod:`.auth` (signatures), :mod:`.hub` (one broker subscription per channel per
node), :mod:`.session` (per-connection send buffer), :mod:`.node` (the node: broker, hub,
sessions), :mod:`.websocket` and :mod:`.sse` (transports), :mod:`.api` (HTTP API),
:mod:`.app` (builds the ASGI app, maps errors to HTTP), :mod:`.server` (uvicorn).
"""

from channelcast.gateway.auth import channel_auth, sign_channel, sign_request
from channelcast.gateway.presence import Member

__all__ = ["Member", "channel_auth", "sign_channel", "sign_request"]
