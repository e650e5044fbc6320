"""Scripted experts: the next action from the task's parsed goal (MiniWoB++'s ``fields``) and the page.

Each expert looks at the page as it is now (the elements the agent sees), so it can take over at
any step. A page it does not recognise raises ``ExpertError`` with the page, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from agentclone.envs import ExpertAction
from agentclone_miniwob.page import Element, render_page


class ExpertError(RuntimeError):
    """The expert cannot act on this page (a bug in the expert or an unexpected page)."""


@dataclass
class View:
    """What an expert reads: the task name, the instruction, its parsed fields and the page's elements."""

    task: str
    utterance: str
    fields: dict[str, str]
    elements: list[Element]
    clicked: set[int] = field(default_factory=set)  # refs the episode has clicked so far

    def find(self, role: str | None = None, text: str | None = None) -> list[Element]:
        norm = _norm(text) if text is not None else None
        return [e for e in self.elements
                if (role is None or e.role == role) and (norm is None or _norm(e.text) == norm)]

    def one(self, role: str | None = None, text: str | None = None) -> Element:
        found = self.find(role, text)
        if not found:
            what = " ".join(x for x in (role or "element", repr(text) if text is not None else "") if x)
            raise ExpertError(f"{self.task}: no {what} on the page\n{render_page(self.utterance, self.elements)}")
        return found[0]

    def target(self, key: str = "target") -> str:
        if key not in self.fields:
            raise ExpertError(f"{self.task}: the instruction has no {key!r} field: {self.utterance!r}")
        return self.fields[key]


def _norm(text: str) -> str:
    """Whitespace-normalised; case matters (click-button asks for "okay" next to "Okay")."""
    return " ".join(text.split())


def _click(el: Element, thought: str) -> ExpertAction:
    return ExpertAction(action=f"click {el.ref}", thought=thought)


def _type(el: Element, text: str, thought: str) -> ExpertAction:
    return ExpertAction(action=f'type {el.ref} "{text}"', thought=thought)


EXPERTS: dict[str, Callable[[View], ExpertAction]] = {}


def expert(*tasks: str):
    def register(fn: Callable[[View], ExpertAction]):
        for task in tasks:
            EXPERTS[task] = fn
        return fn

    return register


# -- clicking -----------------------------------------------------------------------------------


@expert("click-test")
def _click_test(v: View) -> ExpertAction:
    return _click(v.one("button"), "There is one button; click it.")


@expert("click-test-2", "click-button", "unicode-test")
def _click_named_button(v: View) -> ExpertAction:
    name = v.target()
    return _click(v.one("button", name), f'Click the "{name}" button.')


@expert("click-button-sequence")
def _click_button_sequence(v: View) -> ExpertAction:
    one = v.one("button", "ONE")
    if one.ref not in v.clicked:
        return _click(one, "First button ONE.")
    return _click(v.one("button", "TWO"), "ONE is done; now button TWO.")


@expert("click-link")
def _click_link(v: View) -> ExpertAction:
    name = v.target()
    return _click(v.one("link", name), f'Click the link "{name}".')


@expert("click-tab")
def _click_tab(v: View) -> ExpertAction:
    number = v.target()
    return _click(v.one("link", f"Tab #{number}"), f"Click Tab #{number}.")


@expert("click-dialog")
def _click_dialog(v: View) -> ExpertAction:
    return _click(v.one("button", "Close"), 'The "x" is the Close button of the dialog.')


@expert("click-dialog-2")
def _click_dialog_2(v: View) -> ExpertAction:
    name = v.target()
    if name.lower() == "x":
        return _click(v.one("button", "Close"), 'The "x" is the Close button of the dialog.')
    return _click(v.one("button", name), f'Click the dialog\'s "{name}" button.')


WIDGET_ROLES = {"button": "button", "text": "textbox", "textarea": "textarea", "radio": "radio", "checkbox": "checkbox"}


@expert("click-widget")
def _click_widget(v: View) -> ExpertAction:
    kind = v.target()
    role = WIDGET_ROLES.get(kind)
    if role is None:
        raise ExpertError(f"click-widget: unknown widget kind {kind!r}")
    return _click(v.one(role), f"A {kind} widget is a {role}; click one.")


@expert("click-collapsible", "click-collapsible-nodelay")
def _click_collapsible(v: View) -> ExpertAction:
    if any(e.role == "div" and e.text for e in v.elements):  # the section's text shows once it is expanded
        return _click(v.one("button", "Submit"), "The section is expanded; click Submit.")
    return _click(v.one("heading"), "Expand the section first.")


# -- choosing -----------------------------------------------------------------------------------


@expert("click-checkboxes", "click-checkboxes-large", "click-checkboxes-transfer")
def _click_checkboxes(v: View) -> ExpertAction:
    wanted = {_norm(val) for key, val in v.fields.items() if key.startswith("target ")}
    for box in v.find("checkbox"):
        should = _norm(box.text) in wanted
        if box.checked != should:
            verb = "Check" if should else "Uncheck"
            return _click(box, f"{verb} {box.text}.")
    return _click(v.one("button", "Submit"), "The right boxes are checked; submit.")


@expert("click-option")
def _click_option(v: View) -> ExpertAction:
    name = v.target()
    option = v.one("radio", name)
    if not option.checked:
        return _click(option, f"Choose {name}.")
    return _click(v.one("button", "Submit"), f"{name} is chosen; submit.")


@expert("choose-list")
def _choose_list(v: View) -> ExpertAction:
    name = v.target()
    menu = v.one("select")
    if _norm(menu.value or "") != _norm(name):
        return ExpertAction(action=f'select {menu.ref} "{name}"', thought=f"Pick {name} in the list.")
    return _click(v.one("button", "Submit"), f"{name} is selected; submit.")


# -- text fields --------------------------------------------------------------------------------


@expert("focus-text")
def _focus_text(v: View) -> ExpertAction:
    return _click(v.one("textbox"), "Click the textbox to focus it.")


@expert("focus-text-2")
def _focus_text_2(v: View) -> ExpertAction:
    nth = v.target()  # "2" of "Focus into the 2nd input textbox."
    boxes = v.find("textbox")
    if not nth.isdigit() or not 1 <= int(nth) <= len(boxes):
        raise ExpertError(f"focus-text-2: no textbox number {nth} among {len(boxes)}")
    return _click(boxes[int(nth) - 1], f"Textbox number {nth} is [{boxes[int(nth) - 1].ref}]; click it.")


def _fill_then_click(v: View, wanted: list[tuple[Element, str, str]], button: str) -> ExpertAction:
    """Type each (field, text, name) whose value differs, then click ``button``."""
    for el, text, name in wanted:
        if el.value != text:
            return _type(el, text, f"Enter {name}.")
    return _click(v.one("button", button), f"Everything is filled in; click {button}.")


@expert("enter-text")
def _enter_text(v: View) -> ExpertAction:
    text = v.target()
    return _fill_then_click(v, [(v.one("textbox"), text, f'"{text}"')], "Submit")


@expert("enter-text-2")
def _enter_text_2(v: View) -> ExpertAction:
    text, case = v.target("text"), v.target("case")
    wanted = text.upper() if case == "upper" else text.lower()
    return _fill_then_click(v, [(v.one("textbox"), wanted, f'"{wanted}" in {case} case')], "Submit")


@expert("enter-password")
def _enter_password(v: View) -> ExpertAction:
    password = v.target()
    fields = v.find("password")
    if len(fields) != 2:
        raise ExpertError(f"enter-password: expected 2 password fields, found {len(fields)}")
    return _fill_then_click(v, [(fields[0], password, "the password"), (fields[1], password, "the password again")],
                            "Submit")


@expert("login-user")
def _login_user(v: View) -> ExpertAction:
    return _fill_then_click(
        v,
        [(v.one("textbox"), v.target("username"), "the username"),
         (v.one("password"), v.target("password"), "the password")],
        "Login",
    )


def expert_action(view: View) -> ExpertAction:
    fn = EXPERTS.get(view.task)
    if fn is None:
        raise ExpertError(f"no scripted expert for MiniWoB++ task {view.task!r}; experts exist for: "
                          + ", ".join(sorted(EXPERTS)))
    return fn(view)
