"""Strict JSON text for the gateway's wire: what a browser's ``JSON.parse`` accepts.

Owns the two rules every text that enters or leaves the gateway obeys (client frames,
presence ``channel_data``, ``/auth`` bodies, every frame sent): no ``NaN``/``Infinity`` (nor
a number too large for a double, which JavaScript reads as Infinity), and text that is
valid UTF-8 (no lone surrogates, which Python's ``json`` accepts as ``"\\ud800"`` escapes
and then cannot encode). Pure functions; no I/O, nothing else.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from channelcast.errors import SerializationError

MAX_DEPTH = 1024
"""Deepest nesting :func:`loads` accepts (orjson's own limit)."""


class _Constant(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _refuse_constant(name: str) -> Any:
    raise _Constant(name)


def loads(text: str | bytes) -> Any:
    """Strict JSON -> Python values. Raises ValueError naming the problem: not UTF-8, a lone
    surrogate, NaN/Infinity, a number out of a double's range, nesting deeper than
    :data:`MAX_DEPTH`, or any syntax error.

    orjson decides what is valid; the values are ``json.loads``'s, so they are exact
    (orjson reads an integer beyond 64 bits as a float)."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        problem = str(exc)
        try:  # orjson's words for NaN are a syntax error's: name the constant instead
            json.loads(text, parse_constant=_refuse_constant)
        except _Constant as constant:
            problem = f"{constant.name} is not JSON (strict JSON has no NaN or Infinity)"
        except (ValueError, RecursionError):
            pass
        raise ValueError(problem) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def dumps(obj: Any) -> str:
    """Python values -> compact strict JSON text (``ensure_ascii=False``). Raises
    SerializationError (a ValueError) for NaN or Infinity, a lone surrogate, nesting too
    deep to encode, or a value JSON has no type for."""
    try:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise SerializationError("NaN and Infinity are not JSON") from None
        raise SerializationError(f"not JSON: {exc}") from None
    except (TypeError, RecursionError) as exc:
        raise SerializationError(f"not JSON: {type(exc).__name__}: {exc}") from None
    check_text(text)
    return text


def check_text(text: str) -> None:
    """Raise SerializationError if ``text`` cannot be encoded as UTF-8 (a lone surrogate).
    O(1) for ASCII text (CPython knows it is ASCII), one encode otherwise."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise SerializationError(
                f"text holds a lone surrogate ({text[exc.start]!a} at {exc.start}), "
                "which UTF-8 cannot encode") from None
