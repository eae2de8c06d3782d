"""Acceptance in a real browser: Debian's Chromium, headless, through Playwright.

The demo page served by ``channelcast serve`` subscribes; a message published over the
signed HTTP API appears on the page; presence shows both tabs; after a dropped connection
the JS client recovers what was published meanwhile, without duplicates. At 390 px wide the
page is one column and a 600-character word wraps."""

from __future__ import annotations

import json
import os
import re
import signal
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


def test_demo_page_at_390px_wide_with_a_600_character_word(tmp_path: Path) -> None:
    """Narrow screen: one column, the presence panel fully visible, a long word wraps
    instead of widening the page; a failed publish replaces the last success; a refused
    channel is not listed as subscribed; no request fails (the favicon is inline)."""
    with serve_process(tmp_path, "--demo") as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
            failed: list[str] = []
            page.on("response",
                    lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("requestfailed", lambda r: failed.append(f"failed {r.url}"))
            page.goto(server.url + "/?name=carol")
            expect(page.locator("#status")).to_have_text("connected", timeout=15_000)
            expect(page.locator("#members li")).to_have_text(["carol"], timeout=15_000)
            expect(page.locator("#subscriptions")).to_have_text(
                re.compile(r"^(demo, presence-demo|presence-demo, demo)$"), timeout=15_000)

            word = "w" * 600
            page.fill("#publish-data", word)
            page.click("#publish-form button")
            expect(page.locator("#messages li").first).to_contain_text(word, timeout=15_000)
            expect(page.locator("#publish-result")).to_contain_text("stored at")

            def page_fits(width: int) -> None:
                scroll, inner = page.evaluate(
                    "() => [document.documentElement.scrollWidth, window.innerWidth]")
                assert scroll <= inner == width, (scroll, inner)
                panel = page.locator("section:has(#members)").bounding_box()
                assert panel is not None
                assert panel["x"] >= 0, panel
                assert panel["x"] + panel["width"] <= width, panel

            page_fits(390)
            panel = page.locator("section:has(#members)").bounding_box()
            messages = page.locator("section:has(#messages)").bounding_box()
            assert panel is not None
            assert messages is not None
            assert abs(panel["x"] - messages["x"]) < 1  # one column
            assert panel["y"] > messages["y"]
            page.locator("#members").scroll_into_view_if_needed()
            expect(page.locator("section:has(#members)")).to_be_in_viewport(ratio=1)
            page.set_viewport_size({"width": 1100, "height": 700})
            page_fits(1100)  # and wide: two columns, the word still wraps
            page.set_viewport_size({"width": 390, "height": 844})

            # A failed publish: the previous "stored at" is gone, the error shows, once
            # (not "error: message: channel ...").
            page.fill("#publish-channel", "bad name")
            page.click("#publish-form button")
            expect(page.locator("#publish-result")).to_have_text(
                re.compile(r"^not published: channel name "), timeout=15_000)
            # A missing field is called missing.
            page.fill("#publish-channel", "demo")
            page.evaluate("""() => fetch("/demo/publish", {method: "POST",
                headers: {"Content-Type": "application/json"},
                body: JSON.stringify({channel: "demo"})}).then(r => r.json())
                .then(r => { document.title = r.data.message; })""")
            expect(page).to_have_title("message.event is missing", timeout=15_000)

            # A refused channel does not stay under "Subscribed".
            page.fill("#subscribe-channel", "bad name")
            page.click("#subscribe-form button")
            expect(page.locator("#messages li").first).to_contain_text("invalid_channel",
                                                                       timeout=15_000)
            expect(page.locator("#subscriptions")).not_to_contain_text("bad name")
            expect(page.locator("#subscriptions")).to_contain_text("demo")
            assert failed == [f"400 {server.url}/demo/publish"] * 2  # the ones meant to fail

            # The server goes away: while the client retries, the page says "connecting"
            # (with when the next attempt is due), not "disconnected".
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(20) == 0
            expect(page.locator("#status")).to_have_text("connecting", timeout=15_000)
            expect(page.locator("#status")).to_have_attribute(
                "title", re.compile(r"^next attempt in [0-9.]+ s$"))
        finally:
            browser.close()
