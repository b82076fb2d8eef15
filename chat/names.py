"""
The rules for user and group names, and how they are folded for comparison.

A name is 3 to 20 characters: ASCII letters, digits, C{_}, C{-} and C{.},
starting with a letter.  Names keep the case they were given for display and
compare case-insensitively through their folded form.
"""

from __future__ import annotations

import re

MIN_NAME = 3
MAX_NAME = 20
MIN_PASSWORD = 8
MAX_PASSWORD = 256
MAX_DESCRIPTION = 200

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*\Z")

RESERVED = frozenset(
    {
        "admin",
        "administrator",
        "all",
        "anonymous",
        "broadcast",
        "chat",
        "everyone",
        "guest",
        "help",
        "me",
        "moderator",
        "nobody",
        "null",
        "operator",
        "root",
        "server",
        "system",
        "you",
    }
)


class InvalidName(ValueError):
    """
    A name broke the naming rule; the message says how.
    """


def fold(name: str) -> str:
    """
    The form in which names are compared and stored uniquely.
    """
    return name.lower()


def check_name(name: str, what: str = "name") -> str:
    """
    Return C{name} if it follows the rule, else raise L{InvalidName}.
    """
    if not MIN_NAME <= len(name) <= MAX_NAME:
        raise InvalidName(f"a {what} has {MIN_NAME} to {MAX_NAME} characters")
    if not _NAME.match(name):
        raise InvalidName(
            f"a {what} starts with a letter and uses only letters, digits,"
            " '_', '-' and '.'"
        )
    if fold(name) in RESERVED:
        raise InvalidName(f"{name!r} is reserved; choose another {what}")
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidName(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


# Look-alikes within the allowed alphabet, applied in order to the lowercased
# name; "I" is mapped before lowercasing.
_CONFUSABLE = (("rn", "m"), ("vv", "w"), ("cl", "d"), ("0", "o"), ("1", "l"))
_SEPARATORS = str.maketrans("-.", "__")


def skeleton(name: str) -> str:
    """
    The form two names share when a reader could mistake one for the other:
    C{"a1ice"}, C{"AIice"} and C{"alice"} have the same skeleton, and so do
    C{"bob.smith"} and C{"bob_smith"}.
    """
    text = name.replace("I", "l").lower().translate(_SEPARATORS)
    for lookalike, plain in _CONFUSABLE:
        text = text.replace(lookalike, plain)
    return text
