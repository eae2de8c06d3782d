"""channelcast.runtime: the commands' process settings."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from channelcast import runtime
from channelcast.cli.main import main


def test_freeze_startup_heap_takes_live_objects_out_of_full_collections() -> None:
    keep = [{"n": i} for i in range(1000)]  # tracked objects alive now
    try:
        frozen = runtime.freeze_startup_heap()
        assert frozen >= len(keep)
        assert gc.get_freeze_count() == frozen
        assert not any(obj is keep for obj in gc.get_objects())  # no longer walked
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_serve_freezes_the_heap_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(runtime, "freeze_startup_heap", lambda: calls.append("freeze") or 0)

    def fake_serve(*_args: Any, **_kwargs: Any) -> None:
        calls.append("serve")

    monkeypatch.setattr("channelcast.gateway.server.serve", fake_serve)
    assert main(["serve", "--port", "0"]) == 0
    assert calls == ["freeze", "serve"]
