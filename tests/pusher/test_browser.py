"""pusher-js in a real browser: a page loading pusher-js from the npm package (served by
the test, no CDN) in Debian's Chromium through Playwright receives an event triggered
through the Python SDK on ``channelcast serve``; with the recovery wrapper (served by
the gateway at /static/pusher-recovery.js) it also gets what was published while its
connection was down."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pusher
import pytest
from playwright.sync_api import expect, sync_playwright

from channelcast.config import GatewaySettings
from tests.e2e.conftest import serve_process
from tests.e2e.test_browser import ARGS, CHROMIUM
from tests.pusher.conftest import JS_DIR, node_or_fail

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>pusher-js on channelcast</title>
<script src="/pusher-js/dist/web/pusher.min.js"></script>
<script src="GATEWAY/static/pusher-recovery.js"></script></head>
<body><p id="status">loading</p><p id="subscribed">no</p><ul id="log"></ul>
<script>
  const params = new URLSearchParams(location.search);
  const pusher = new Pusher(params.get("key"), {
    wsHost: "127.0.0.1", wsPort: Number(params.get("port")), forceTLS: false,
    enabledTransports: ["ws"], cluster: "mt1", disableStats: true});
  window.recovery = channelcastRecovery(pusher);
  window.pusher = pusher;
  pusher.connection.bind("state_change", (s) => {
    document.getElementById("status").textContent = s.current;
  });
  const channel = pusher.subscribe("news");
  channel.bind("pusher:subscription_succeeded", () => {
    document.getElementById("subscribed").textContent = "yes";
  });
  channel.bind("flash", (data) => {
    const li = document.createElement("li");
    li.textContent = data.headline;
    document.getElementById("log").appendChild(li);
  });
</script></body></html>
"""


@contextmanager
def page_server(gateway_url: str) -> Iterator[str]:
    """The page at / and the npm packages at /pusher-js/..., from tests/pusher/js."""
    page = PAGE.replace("GATEWAY", gateway_url).encode()

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/":
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Handler, directory=str(JS_DIR / "node_modules"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_with_pusher_js_receives_an_event_triggered_through_the_sdk(
        tmp_path: Path) -> None:
    node_or_fail()  # the same check that the packages are installed
    g = GatewaySettings()
    with serve_process(tmp_path) as gateway, page_server(gateway.url) as pages, \
            sync_playwright() as pw:
        server = pusher.Pusher(app_id=g.app_id, key=g.app_key, secret=g.app_secret,
                               host="127.0.0.1", port=gateway.port, ssl=False)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{pages}/?key={g.app_key}&port={gateway.port}")
            expect(page.locator("#status")).to_have_text("connected", timeout=15_000)
            expect(page.locator("#subscribed")).to_have_text("yes", timeout=15_000)
            result = server.trigger("news", "flash", {"headline": "hello from the SDK"})
            assert "news" in result["positions"]
            expect(page.locator("#log li")).to_have_text(["hello from the SDK"],
                                                         timeout=15_000)

            # The connection drops; what is published meanwhile arrives after pusher-js
            # reconnects, because the wrapper resubscribes with the last position.
            page.evaluate("() => pusher.disconnect()")
            expect(page.locator("#status")).to_have_text("disconnected", timeout=15_000)
            for text in ("missed one", "missed two"):
                server.trigger("news", "flash", {"headline": text})
            page.evaluate("() => pusher.connect()")
            expect(page.locator("#status")).to_have_text("connected", timeout=15_000)
            expect(page.locator("#log li")).to_have_text(
                ["hello from the SDK", "missed one", "missed two"], timeout=15_000)
        finally:
            browser.close()
