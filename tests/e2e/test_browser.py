"""Acceptance in a real browser: Debian's Chromium, headless, through Playwright.

The demo page served by ``channelcast serve`` subscribes; a message published over the
signed HTTP API appears on the page; presence shows both tabs; after a dropped connection
the JS client recovers what was published meanwhile, without duplicates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from channelcast.config import GatewaySettings
from channelcast.gateway.auth import sign_request
from tests.e2e.conftest import serve_process

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

CHROMIUM = os.environ.get("CHANNELCAST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_demo_page_shows_published_messages_and_presence_of_two_tabs(tmp_path: Path) -> None:
    with serve_process(tmp_path, "--demo") as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 700})
            alice = context.new_page()
            alice.goto(server.url + "/?name=alice")
            expect(alice.locator("#status")).to_have_text("connected", timeout=15_000)
            bob = context.new_page()
            bob.goto(server.url + "/?name=bob")
            expect(bob.locator("#status")).to_have_text("connected", timeout=15_000)

            for page in (alice, bob):
                expect(page.locator("#members li")).to_have_text(["alice", "bob"],
                                                                 timeout=15_000)

            g = GatewaySettings()
            body = json.dumps({"channel": "demo", "event": "news",
                               "data": {"headline": "hello from the HTTP API"}}).encode()
            r = httpx.post(server.url + "/api/publish", content=body,
                           headers=sign_request(g.app_key, g.app_secret, body))
            assert r.status_code == 200, r.text
            position = r.json()["positions"][0]
            for page in (alice, bob):
                first = page.locator("#messages li").first
                expect(first).to_contain_text("hello from the HTTP API", timeout=15_000)
                expect(first).to_contain_text(position)

            # The page's own publish form works too.
            bob.fill("#publish-data", "typed by bob")
            bob.click("#publish-form button")
            expect(alice.locator("#messages li").first).to_contain_text("typed by bob",
                                                                        timeout=15_000)
            alice.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            if os.environ.get("CHANNELCAST_SCREENSHOT"):
                alice.screenshot(path=os.environ["CHANNELCAST_SCREENSHOT"], full_page=True)

            # The connection drops; messages published meanwhile arrive after the reconnect,
            # because the JS client resubscribes with its last positions.
            alice.evaluate("() => { client._stopped = true; client._ws.close(); }")
            expect(alice.locator("#status")).to_have_text("disconnected", timeout=15_000)
            for text in ("missed one", "missed two"):
                body = json.dumps({"channel": "demo", "event": "news",
                                   "data": {"headline": text}}).encode()
                r = httpx.post(server.url + "/api/publish", content=body,
                               headers=sign_request(g.app_key, g.app_secret, body))
                assert r.status_code == 200, r.text
            alice.evaluate("() => client.connect()")
            expect(alice.locator("#status")).to_have_text("connected", timeout=15_000)
            expect(alice.locator("#messages li").nth(0)).to_contain_text("missed two",
                                                                         timeout=15_000)
            expect(alice.locator("#messages li").nth(1)).to_contain_text("missed one")
            expect(alice.locator("#messages li")).to_have_count(4)

            # A tab closes: the other sees the member leave.
            bob.close()
            expect(alice.locator("#members li")).to_have_text(["alice"], timeout=15_000)
        finally:
            browser.close()
