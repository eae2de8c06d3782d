"""Pusher-protocol test helpers: gateways with apps, the Python SDK, an auth endpoint built
on the SDK, a webhook receiver, raw Pusher WebSocket clients and a driver for the real
JavaScript clients (pusher-js, Laravel Echo) in node.

The JavaScript clients come from tests/pusher/js (``npm ci`` there; ``scripts/install``
does it when npm exists). Without node or those packages the JS tests fail, they never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pusher
import pytest
from websockets.asyncio.client import ClientConnection, connect

from channelcast.config import AppSettings, GatewaySettings, PusherSettings, Settings
from channelcast.gateway.pusher import names
from tests.gateway.conftest import Running
from tests.gateway.logwatch import server_log

__all__ = ["server_log"]  # the autouse log watch (tests.gateway.logwatch): no unexpected ERROR

JS_DIR = Path(__file__).resolve().parent / "js"
DRIVER = JS_DIR / "driver.cjs"
STATIC = Path(__file__).resolve().parents[2] / "src" / "channelcast" / "gateway" / "static"
RECOVERY_JS = STATIC / "pusher-recovery.js"

OTHER_APP = AppSettings(id="42", key="other-key", secret="other-secret", client_events=True)


def pusher_settings(*, client_events: bool = True, webhook_url: str | None = None,
                    apps: tuple[AppSettings, ...] = (OTHER_APP,), broker: str = "memory://",
                    kafka: Any = None, gateway: dict[str, Any] | None = None,
                    **pusher_keys: Any) -> Settings:
    g = replace(GatewaySettings(), app_client_events=client_events,
                app_webhook_url=webhook_url, **(gateway or {}))
    settings = Settings(broker=broker, gateway=g, apps=apps,
                        pusher=replace(PusherSettings(), **pusher_keys))
    if kafka is not None:
        settings = replace(settings, kafka=kafka)
    return settings


def port_of(gw: Running) -> int:
    return int(gw.base_url.rsplit(":", 1)[1])


def sdk(gw: Running, app: AppSettings | None = None) -> pusher.Pusher:
    """The Python server SDK pointed at the gateway (the default app unless ``app``)."""
    g = gw.settings().gateway
    app_id, key, secret = (g.app_id, g.app_key, g.app_secret) if app is None else (
        app.id, app.key, app.secret)
    return pusher.Pusher(app_id=app_id, key=key, secret=secret, host="127.0.0.1",
                         port=port_of(gw), ssl=False, timeout=10)


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking SDK call off the event loop (the gateway runs on it)."""
    return await asyncio.to_thread(fn, *args)


async def until_count(client: pusher.Pusher, channel: str, count: int,
                      wait_s: float = 15.0) -> dict[str, Any]:
    """Poll the channel API until the channel has ``count`` subscriptions (cluster-wide)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        info: dict[str, Any] = await call(client.channel_info, channel,
                                          ["subscription_count"])
        if info.get("subscription_count", 0) == count:
            return info
        if loop.time() > deadline:
            raise AssertionError(f"{channel}: {info}, want {count} subscriptions")
        await asyncio.sleep(0.05)


async def until_local_count(gw: Running, name: str, count: int, app_id: str | None = None,
                            wait_s: float = 15.0) -> None:
    """Wait until the node's own view has ``count`` subscriptions on the app's channel
    ``name`` (for channels the SDK cannot ask about)."""
    node = gw.gateway.pusher
    app = node.apps.by_id(app_id or gw.settings().gateway.app_id)
    assert app is not None
    channel = names.parse(app, name).channel
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while (stat := node.cluster.channels(app.id).get(channel)) is None or stat.count != count:
        if loop.time() > deadline:
            raise AssertionError(f"{name}: {stat}, want {count} subscriptions")
        await asyncio.sleep(0.05)


async def until_published(gw: Running, name: str, count: int, app_id: str | None = None,
                          wait_s: float = 15.0) -> None:
    """Wait until the cluster state in the log (not the node's live counts) has ``count``
    subscriptions on the app's channel ``name``: what transitions (webhooks) come from."""
    node = gw.gateway.pusher
    app = node.apps.by_id(app_id or gw.settings().gateway.app_id)
    assert app is not None
    channel = names.parse(app, name).channel
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while (stat := node.cluster.table.cluster(app.id).get(channel)) is None \
            or stat.count != count:
        if loop.time() > deadline:
            raise AssertionError(f"{name}: {stat}, want {count} subscriptions in the log")
        await asyncio.sleep(0.02)


# --- an auth endpoint, as an application would write it with the SDK ----------------------


class AuthServer:
    """``POST /auth`` (channel authorization) and ``POST /user-auth`` (sign-in), form
    encoded as pusher-js sends them. The user comes from the ``user_id`` parameter (the
    clients pass it in ``params``); ``refuse`` lists channels it answers 403 for."""

    def __init__(self, client: pusher.Pusher) -> None:
        self.client = client
        self.refuse: set[str] = set()
        self.requests: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                outer.requests.append(form)
                status, body = outer.answer(self.path, form)
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, form: dict[str, str]) -> tuple[int, Any]:
        socket_id = form.get("socket_id", "")
        user = form.get("user_id", "anonymous")
        if path.startswith("/user-auth"):
            return 200, self.client.authenticate_user(
                socket_id, {"id": user, "user_info": {"name": user.title()}})
        channel = form.get("channel_name", "")
        if channel in self.refuse:
            return 403, {"error": "forbidden"}
        custom = {"user_id": user, "user_info": {"name": user.title()}} \
            if channel.startswith("presence-") else None
        signed = self.client.authenticate(channel, socket_id, custom)
        if isinstance(signed.get("shared_secret"), bytes):  # encrypted channels: base64
            signed["shared_secret"] = signed["shared_secret"].decode()
        return 200, signed

    def __enter__(self) -> AuthServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- a webhook receiver ---------------------------------------------------------------------


@dataclass
class Hook:
    key: str
    signature: str
    body: str


class WebhookReceiver:
    """Collects POSTed webhooks; answers ``fail_first`` of them with 500 first, and every
    one until ``fail_until`` (a ``time.monotonic()`` value) too. ``attempts`` holds every
    body POSTed, failed or not, with when it came (monotonic seconds)."""

    def __init__(self, fail_first: int = 0, fail_until: float = 0.0) -> None:
        self.hooks: list[Hook] = []
        self.attempts: list[tuple[float, str]] = []
        self.failures = 0
        self.fail_first = fail_first
        self.fail_until = fail_until
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                with outer.lock:
                    outer.attempts.append((time.monotonic(), body))
                    fail = outer.failures < outer.fail_first \
                        or time.monotonic() < outer.fail_until
                    if fail:
                        outer.failures += 1
                    else:
                        outer.hooks.append(Hook(self.headers.get("X-Pusher-Key", ""),
                                                self.headers.get("X-Pusher-Signature", ""),
                                                body))
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def events(self, client: pusher.Pusher) -> list[dict[str, Any]]:
        """Every event of every webhook whose signature the SDK accepts (asserted)."""
        out = []
        with self.lock:
            hooks = list(self.hooks)
        for hook in hooks:
            body = client.validate_webhook(hook.key, hook.signature, hook.body)
            assert body is not None, f"the SDK refused a webhook: {hook}"
            out.extend(body["events"])
        return out

    async def wait_for(self, client: pusher.Pusher, want: Callable[[list[dict[str, Any]]], bool],
                       wait_s: float = 15.0) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            events = self.events(client)
            if want(events):
                return events
            if loop.time() > deadline:
                raise AssertionError(f"webhooks so far: {events}")
            await asyncio.sleep(0.05)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def webhook_receiver(fail_first: int = 0, fail_until: float = 0.0
                     ) -> Iterator[WebhookReceiver]:
    with WebhookReceiver(fail_first, fail_until) as receiver:
        yield receiver


class DeadReceiver:
    """A webhook URL whose server accepts connections and reads requests but never
    answers (a hung receiver); counts the requests it got."""

    def __init__(self) -> None:
        self.requests = 0
        self._held: list[socket.socket] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/hang"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(0.5)
            with contextlib.suppress(OSError):
                if conn.recv(65536):
                    self.requests += 1
            self._held.append(conn)  # never answered, closed at the end

    def __enter__(self) -> DeadReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        for conn in self._held:
            conn.close()


# --- a raw Pusher WebSocket client ----------------------------------------------------------


class RawPusher:
    """A Pusher-protocol client written by hand (to see exact frames and close codes)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.socket_id = ""
        self.frames: list[dict[str, Any]] = []

    async def send(self, event: str, data: Any, channel: str | None = None) -> None:
        frame: dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            frame["channel"] = channel
        await self.ws.send(json.dumps(frame))

    async def recv(self, wait_s: float = 5.0) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), wait_s))
        self.frames.append(frame)
        return frame

    async def expect(self, event: str, wait_s: float = 5.0,
                     where: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            frame = await self.recv(max(0.01, deadline - loop.time()))
            if frame["event"] == event and (where is None or where(frame)):
                return frame

    async def subscribe(self, channel: str, **data: Any) -> dict[str, Any]:
        await self.send("pusher:subscribe", {"channel": channel, **data})
        return await self.recv()


@asynccontextmanager
async def raw_pusher(gw: Running, key: str | None = None,
                     query: str = "protocol=7&client=python&version=1") -> AsyncIterator[RawPusher]:
    key = gw.settings().gateway.app_key if key is None else key
    async with connect(f"ws://127.0.0.1:{port_of(gw)}/app/{key}?{query}",
                       open_timeout=10) as ws:
        client = RawPusher(ws)
        hello = await client.recv()
        assert hello["event"] == "pusher:connection_established", hello
        client.socket_id = json.loads(hello["data"])["socket_id"]
        yield client


# --- the JavaScript clients --------------------------------------------------------------


def node_or_fail() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the Pusher JS tests need it", pytrace=False)
    for package in ("pusher-js", "laravel-echo"):
        if not (JS_DIR / "node_modules" / package).is_dir():
            pytest.fail(f"{package} is not installed: run scripts/install (npm ci in {JS_DIR})",
                        pytrace=False)
    return node


@dataclass
class JsDriver:
    """One node process running tests/pusher/js/driver.cjs: commands in, events out."""

    proc: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    taken: set[int] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.events.append(json.loads(line))
            self.changed.set()

    async def send(self, cmd: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()

    def _match(self, event: dict[str, Any], want: dict[str, Any]) -> bool:
        for key, value in want.items():
            if callable(value):
                if key not in event or not value(event[key]):
                    return False
            elif event.get(key) != value:
                return False
        return True

    async def expect(self, wait_s: float = 10.0, **want: Any) -> dict[str, Any]:
        """The first event not yet taken that matches ``want`` (values or predicates)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            for i, event in enumerate(self.events):
                if i not in self.taken and self._match(event, want):
                    self.taken.add(i)
                    return event
                if event.get("ev") == "driver_error":
                    raise AssertionError(f"driver error: {event['error']}")
            if loop.time() > deadline:
                raise AssertionError(f"no event like {want}; got: {self.events[-30:]}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - loop.time()))

    def all(self, **want: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if self._match(e, want)]

    async def connect(self, id: str, gw: Running, *, key: str | None = None,
                      auth: AuthServer | None = None, user: str | None = None,
                      recovery: bool = False, **options: Any) -> str:
        """A pusher-js client; returns its socket id once connected."""
        args: dict[str, Any] = {"id": id, "key": key or gw.settings().gateway.app_key,
                                "host": "127.0.0.1", "port": port_of(gw),
                                "options": options}
        if auth is not None:
            args["authEndpoint"] = auth.url + "/auth"
            args["userAuthEndpoint"] = auth.url + "/user-auth"
            if user is not None:
                params = {"params": {"user_id": user}}
                args["options"] = {"channelAuthorization": {
                    "endpoint": auth.url + "/auth", "transport": "ajax", **params},
                    "userAuthentication": {"endpoint": auth.url + "/user-auth",
                                           "transport": "ajax", **params},
                    **options}
        if recovery:
            args["recovery"] = str(RECOVERY_JS)
        await self.send("connect", **args)
        state = await self.expect(ev="state", id=id, current="connected")
        return str(state["socket_id"])


@asynccontextmanager
async def js_driver() -> AsyncIterator[JsDriver]:
    node = node_or_fail()
    proc = await asyncio.create_subprocess_exec(
        node, str(DRIVER), cwd=str(JS_DIR), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    driver = JsDriver(proc)
    driver.reader = asyncio.create_task(driver._read())
    try:
        await driver.expect(ev="ready")
        yield driver
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        driver.reader.cancel()
        await asyncio.gather(driver.reader, return_exceptions=True)
