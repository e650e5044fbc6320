"""The action language the agent writes, parsed into commands::

    click 12              click element [12]
    type 7 "hello"        replace the text of field [7] with hello
    select 4 "Option"     choose an option of the drop-down list [4]
    press Enter           press a key (Enter, Tab, Backspace, Delete, Space, arrows, PageUp/PageDown)
    wait                  do nothing for a moment (animations)

Refs may be written ``12`` or ``[12]``; text may be in double or single quotes, or bare. There is
no navigation: nothing the agent writes can take the browser to another address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentclone.envs import InvalidAction

USAGE = ('use `click N`, `type N "text"`, `select N "option"`, `press KEY` or `wait`, '
         "where N is the number in brackets of an element on the page")
MAX_TYPED = 200

# key names the agent may press -> MiniWoB's key syntax (miniwob.constants.DEFAULT_ALLOWED_KEYS)
KEYS = {
    "enter": "<Enter>", "return": "<Enter>", "tab": "<Tab>", "backspace": "<Backspace>", "delete": "<Delete>",
    "space": "<Space>", "up": "<ArrowUp>", "down": "<ArrowDown>", "left": "<ArrowLeft>", "right": "<ArrowRight>",
    "arrowup": "<ArrowUp>", "arrowdown": "<ArrowDown>", "arrowleft": "<ArrowLeft>", "arrowright": "<ArrowRight>",
    "pageup": "<PageUp>", "pagedown": "<PageDown>",
}

_REF = r"\[?(\d{1,7})\]?"
_PATTERNS = {
    "click": re.compile(rf"click\s+{_REF}", re.I),
    "type": re.compile(rf"type\s+{_REF}\s+(.*)", re.I | re.S),
    "select": re.compile(rf"select\s+{_REF}\s+(.*)", re.I | re.S),
    "press": re.compile(r"press\s+<?([a-z]+)>?", re.I),
    "wait": re.compile(r"wait", re.I),
}


@dataclass(frozen=True)
class Command:
    verb: str  # click, type, select, press, wait
    ref: int | None = None
    text: str | None = None  # typed text, option, or MiniWoB key name

    def __str__(self) -> str:
        if self.verb in ("click",):
            return f"click {self.ref}"
        if self.verb in ("type", "select"):
            return f'{self.verb} {self.ref} "{self.text}"'
        if self.verb == "press":
            return f"press {self.text}"
        return self.verb


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _show(action: str, limit: int = 60) -> str:
    return '"' + (action if len(action) <= limit else action[:limit] + "...") + '"'


def parse_action(action: str) -> Command:
    """Parse one action; raise InvalidAction (shown to the agent) if it is not in the language."""
    text = action.strip()
    if not text:
        raise InvalidAction(f"the action was empty; {USAGE}")
    verb = text.split(None, 1)[0].lower()
    pattern = _PATTERNS.get(verb)
    match = pattern.fullmatch(text) if pattern else None
    if match is None:
        if pattern is None:
            raise InvalidAction(f"unknown action {_show(text)}; {USAGE}")
        raise InvalidAction(f"could not parse {_show(text)}; {USAGE}")
    if verb == "wait":
        return Command("wait")
    if verb == "press":
        key = KEYS.get(match.group(1).lower())
        if key is None:
            raise InvalidAction(f"unknown key {match.group(1)!r}; keys: Enter, Tab, Backspace, Delete, Space, "
                                "Up, Down, Left, Right, PageUp, PageDown")
        return Command("press", text=key)
    ref = int(match.group(1))
    if verb == "click":
        return Command("click", ref=ref)
    value = _unquote(match.group(2))
    if verb == "type":
        if len(value) > MAX_TYPED:
            raise InvalidAction(f"the text to type is longer than {MAX_TYPED} characters")
        if "\n" in value:
            raise InvalidAction("the text to type must be on one line; use `press Enter` for a new line")
        return Command("type", ref=ref, text=value)
    if not value:
        raise InvalidAction('name the option to select, e.g. `select 4 "Option"`')
    return Command("select", ref=ref, text=value)
