"""
Making text that came from one person safe to show on another's terminal.

Incoming bytes must be valid UTF-8.  Control characters (which include the
escape that starts ANSI sequences), C1 controls and the bidirectional
overrides that can disguise text are replaced by a visible mark, so nothing a
person types can move another person's cursor, recolour their screen or
impersonate a line from the server.
"""

from __future__ import annotations

import re
import unicodedata

REPLACEMENT = "\N{REPLACEMENT CHARACTER}"

_BIDI_CONTROLS = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f{_BIDI_CONTROLS}]")


class BadEncoding(ValueError):
    """
    The bytes were not valid UTF-8.
    """


def decode(data: bytes) -> str:
    """
    Decode a line of UTF-8, refusing anything else.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadEncoding(f"the line is not valid UTF-8 (byte {e.start})") from e


def neutralise(text: str) -> str:
    """
    Replace every character that could act on a terminal; tabs become spaces.
    """
    text = unicodedata.normalize("NFC", text.replace("\t", " "))
    return _UNSAFE.sub(REPLACEMENT, text)
