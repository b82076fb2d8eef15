"""
The command table, and the parsers that turn a text or JSON line into a
L{Command}.

Every command is declared once in L{COMMANDS}: its parameters, how many are
required, whether the last one takes the rest of the line, and whether it is
allowed before login.  Both parsers check a line against that table, so the
protocol's handlers only ever see well-formed commands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chat.service import ChatError


@dataclass(frozen=True)
class Spec:
    verb: str
    params: tuple[str, ...] = ()
    required: int = 0
    rest: bool = False
    before_login: bool = False
    after_login: bool = True
    usage: str = ""
    summary: str = ""
    json_only: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    """
    A parsed request: C{args} has one string per parameter given, in order.
    """

    verb: str
    args: tuple[str, ...] = ()
    id: Any = None
    options: dict[str, str] = field(default_factory=dict)

    def arg(self, index: int, default: str = "") -> str:
        return self.args[index] if index < len(self.args) else default


def _spec(verb: str, usage: str, summary: str, *params: str, **kw: Any) -> Spec:
    return Spec(verb, params, usage=usage, summary=summary, **kw)


_ACCOUNT = {"before_login": True, "after_login": False, "rest": True}
_ANYTIME = {"before_login": True}

COMMANDS: dict[str, Spec] = {
    s.verb: s
    for s in [
        _spec(
            "signup",
            "/signup [NAME [PASSWORD]]",
            "create an account",
            "name",
            "password",
            **_ACCOUNT,
        ),
        _spec(
            "login",
            "/login [NAME [PASSWORD]]",
            "log in",
            "name",
            "password",
            **_ACCOUNT,
        ),
        _spec(
            "msg",
            "/msg TARGET TEXT",
            "send to a user, #group or * (everyone)",
            "target",
            "text",
            required=2,
            rest=True,
            json_only=("ref",),
        ),
        _spec(
            "resume",
            "/resume TOKEN [LAST_ID]",
            "continue a session after a disconnect",
            "token",
            "last_id",
            required=1,
            before_login=True,
            after_login=False,
        ),
        _spec("ping", "/ping", "keep the session alive", before_login=True),
        _spec(
            "open",
            "/open TARGET",
            "show a conversation and talk in it",
            "target",
            required=1,
        ),
        _spec("back", "/back", "leave the open conversation"),
        _spec(
            "history",
            "/history TARGET [N]",
            "show the last N messages",
            "target",
            "limit",
            required=1,
        ),
        _spec("who", "/who", "list the people online"),
        _spec("users", "/users", "list every user, online or not"),
        _spec("groups", "/groups", "list my groups"),
        _spec(
            "groups_all",
            "/groups all [TEXT]",
            "browse and search groups",
            "search",
            rest=True,
        ),
        _spec(
            "group_create",
            "/group create NAME [DESCRIPTION]",
            "open a group",
            "name",
            "description",
            required=1,
            rest=True,
        ),
        _spec(
            "group_invite",
            "/group invite NAME USER",
            "add someone (admins)",
            "group",
            "user",
            required=2,
        ),
        _spec(
            "group_remove",
            "/group remove NAME USER",
            "remove someone (admins)",
            "group",
            "user",
            required=2,
        ),
        _spec(
            "group_join", "/group join NAME", "join a public group", "group", required=1
        ),
        _spec("group_leave", "/group leave NAME", "leave a group", "group", required=1),
        _spec(
            "group_members",
            "/group members NAME",
            "list a group's members",
            "group",
            required=1,
        ),
        _spec(
            "group_private",
            "/group private NAME on|off",
            "make a group invite-only or not (admins)",
            "group",
            "private",
            required=2,
        ),
        _spec(
            "mode",
            "/mode text|json",
            "switch how the server writes",
            "mode",
            required=1,
            **_ANYTIME,
        ),
        _spec("help", "/help [COMMAND]", "show help", "command", **_ANYTIME),
        _spec("quit", "/quit", "log out and disconnect", **_ANYTIME),
    ]
}

# Text verbs that take a sub-command word before their parameters.
_SUBCOMMANDS = {
    "group": ("create", "invite", "remove", "join", "leave", "members", "private"),
    "groups": ("all",),
}
_ALIASES = {"bye": "quit", "exit": "quit", "q": "quit", "m": "msg", "h": "help"}


def _check(spec: Spec, args: tuple[str, ...], id: Any) -> Command:
    if len(args) < spec.required or len(args) > len(spec.params):
        raise ChatError("bad_request", f"usage: {spec.usage}")
    return Command(spec.verb, args, id)


def lookup(verb: str) -> Spec:
    spec = COMMANDS.get(_ALIASES.get(verb, verb))
    if spec is None:
        raise ChatError(
            "unknown_command", f"unknown command {verb!r}; type /help for the list"
        )
    return spec


def parse_text(line: str) -> Command:
    """
    Parse a line that starts with C{/} (or is a bare C{bye}).
    """
    words = line.lstrip("/").split(None, 1)
    if not words:
        raise ChatError("unknown_command", "type /help for the list of commands")
    verb, rest = words[0].lower(), words[1] if len(words) > 1 else ""
    subs = _SUBCOMMANDS.get(verb)
    if subs is not None:
        head = rest.split(None, 1)
        if head and head[0].lower() in subs:
            verb = f"{verb}_{head[0].lower()}"
            rest = head[1] if len(head) > 1 else ""
        elif verb == "group":
            raise ChatError(
                "bad_request",
                "usage: /group create|invite|remove|join|leave|members|private ...",
            )
    spec = lookup(verb)
    if not spec.params:
        args: tuple[str, ...] = ()
        if rest.strip():
            raise ChatError("bad_request", f"usage: {spec.usage}")
    elif spec.rest:
        parts = rest.split(None, len(spec.params) - 1)
        args = tuple(p.strip() for p in parts)
    else:
        args = tuple(rest.split())
    return _check(spec, args, None)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _encodable(text: str) -> bool:
    """
    Whether C{text} can be stored and sent: JSON escapes can spell lone
    surrogates, which UTF-8 cannot carry.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _usable_id(id: Any) -> bool:
    if id is None or (isinstance(id, int) and not isinstance(id, bool)):
        return True
    return isinstance(id, str) and len(id) <= 100 and _encodable(id)


def parse_json(line: str) -> Command:
    """
    Parse a JSON command object: C{{"cmd": VERB, "id": ..., PARAM: VALUE}}.
    """
    try:
        obj = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise ChatError("bad_request", "the line is not valid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("cmd"), str):
        raise ChatError("bad_request", 'a JSON command is an object with a "cmd"')
    id = obj.get("id")
    if not _usable_id(id):
        raise ChatError(
            "bad_request",
            'an "id" is a string of at most 100 characters or an integer',
        )
    try:
        spec = lookup(obj["cmd"])
        args = []
        for name in spec.params:
            if name not in obj or obj[name] is None:
                break
            value = obj[name]
            if isinstance(value, bool):
                value = "on" if value else "off"
            if not isinstance(value, str | int) or not _encodable(str(value)):
                raise ChatError(
                    "bad_request", f'"{name}" must be a string or a whole number'
                )
            args.append(str(value))
        options = {}
        for name in spec.json_only:
            value = obj.get(name)
            if value is not None:
                if (
                    not isinstance(value, str | int)
                    or isinstance(value, bool)
                    or not _encodable(str(value))
                ):
                    raise ChatError("bad_request", f'"{name}" must be a string')
                options[name] = str(value)
        command = _check(spec, tuple(args), id)
        return Command(command.verb, command.args, id, options)
    except ChatError as e:
        raise ChatError(e.code, e.text, id) from None


def help_text(verb: str = "") -> list[str]:
    """
    Help for one command, or a summary of all.
    """
    verb = "_".join(verb.lstrip("/").lower().split())
    if verb in _SUBCOMMANDS:
        specs = [
            s
            for s in COMMANDS.values()
            if s.verb == verb or s.verb.startswith(verb + "_")
        ]
        return [f"{s.usage}: {s.summary}" for s in specs]
    if verb:
        spec = lookup(verb)
        return [f"{spec.usage}: {spec.summary}"]
    lines = ["Commands (TARGET is a user, #group, or * for everyone):"]
    lines += [f"  {s.usage:<36} {s.summary}" for s in COMMANDS.values()]
    lines.append("  In an open conversation, a line without / is sent there.")
    return lines
