"""Strict JSON text for the gateway's wire: what a browser's ``JSON.parse`` accepts.

Owns the rules every JSON text that enters or leaves the gateway obeys (client frames,
presence ``channel_data``, ``/auth`` and publish API bodies, every frame sent): no
``NaN``/``Infinity`` (nor a number too large for a double, which JavaScript reads as
Infinity), text that is valid UTF-8 (no lone surrogates, which Python's ``json`` accepts as
``"\\ud800"`` escapes and then cannot encode), no byte order mark, and nesting at most
:data:`MAX_DEPTH` deep. Its error messages speak of JSON, never of Python's internals.
Pure functions; no I/O, nothing else.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from channelcast.errors import SerializationError

MAX_DEPTH = 256
"""Deepest nesting of arrays and objects :func:`loads` accepts (a document ``[[1]]`` nests
2 deep). Far below what Python's ``json`` can decode and encode again from inside a busy
event loop (about 900 levels here), so every value taken in can be sent back out, wrapped
in a frame a few levels deeper."""


class _Constant(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _refuse_constant(name: str) -> Any:
    raise _Constant(name)


def too_deep(value: object, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (decoded JSON: dicts, lists, scalars) nests arrays and objects
    deeper than ``limit``. Iterative: any depth is safe to ask about."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item \
            if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False


def _depth_problem() -> str:
    return f"arrays and objects nest deeper than {MAX_DEPTH} levels (the depth limit)"


def loads(text: str | bytes) -> Any:
    """Strict JSON -> Python values. Raises ValueError naming the problem in words of JSON,
    never of Python: bytes that are not UTF-8 text, a lone surrogate, NaN/Infinity, a number
    out of a double's range, nesting deeper than :data:`MAX_DEPTH`, a byte order mark, or
    any syntax error.

    orjson decides what is valid; the values are ``json.loads``'s, so they are exact
    (orjson reads an integer beyond 64 bits as a float)."""
    if isinstance(text, str):
        doc = text
    else:
        try:
            doc = bytes(text).decode()
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (byte {exc.start} is not valid UTF-8)") from None
    try:
        checked = orjson.loads(doc)
    except orjson.JSONDecodeError as exc:
        raise ValueError(_problem(doc, str(exc))) from None
    # Only a text with more brackets than the limit can nest deeper than it.
    if doc.count("[") + doc.count("{") > MAX_DEPTH and too_deep(checked):
        raise ValueError(_depth_problem())
    try:
        return json.loads(doc)
    except RecursionError:  # not at MAX_DEPTH; only on a stack that is already very deep
        raise ValueError(_depth_problem()) from None


def _problem(doc: str, problem: str) -> str:
    """orjson's words for why ``doc`` is not strict JSON, made plain where they are not."""
    if problem.startswith("depth limit exceeded"):  # orjson's own limit, above ours
        return _depth_problem()
    if problem.startswith("str is not valid UTF-8"):  # a lone surrogate in a Python str
        return "text holds a lone surrogate, which UTF-8 cannot encode"
    try:  # orjson's words for NaN are a syntax error's: name the constant instead
        json.loads(doc, parse_constant=_refuse_constant)
    except _Constant as constant:
        return f"{constant.name} is not JSON (strict JSON has no NaN or Infinity)"
    except (ValueError, RecursionError):
        pass
    return problem


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
    except RecursionError:
        raise SerializationError("not JSON: nesting too deep to encode") from None
    except TypeError as exc:
        raise SerializationError(f"not JSON: {exc}") from None
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
