"""What the agent sees of a MiniWoB++ page: the task's instruction and a short list of elements.

Each line is one element the agent can act on or read, in document order, with the ref id that
MiniWoB++ gives it (stable for the whole episode), a role, its text and its state::

    Task: Enter the username "kiera" and the password "x2" into the text fields and press login.
    [6] label "Username"
    [7] textbox value="kiera" focused
    [9] label "Password"
    [10] password value=""
    [11] button "Login"

Containers without text of their own are left out; text nodes are folded into their parent, and a
checkbox or radio takes the text of the label around it. Short lines keep prompts cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from miniwob.dom import DOMElement

MAX_TEXT = 80  # characters of an element's text shown
MAX_ELEMENTS = 60  # lines shown; the rest are counted

TEXT_INPUTS = {"text": "textbox", "password": "password", "search": "textbox", "email": "textbox", "url": "textbox",
               "tel": "textbox", "number": "number box"}
CLICKABLE_INPUTS = {"button", "submit", "reset"}


@dataclass
class Element:
    ref: int
    role: str
    text: str = ""
    value: str | None = None  # what a text field holds, or the selected option
    checked: bool | None = None  # checkboxes and radios
    focused: bool = False
    options: tuple[str, ...] = ()  # a select's options
    tag: str = ""
    classes: str = ""
    html_id: str = ""

    @property
    def typeable(self) -> bool:
        """Text can be typed into it."""
        return self.role in TEXT_INPUTS.values() or self.role in ("textarea", "input") or self.role.endswith(" input")

    def render(self) -> str:
        parts = [f"[{self.ref}] {self.role}"]
        if self.text:
            parts.append(_quote(self.text))
        if self.checked is not None:
            parts.append("checked" if self.checked else "unchecked")
        if self.options:
            parts.append(f"selected={_quote(self.value or '')}")
            parts.append("options: " + ", ".join(_quote(o) for o in self.options))
        elif self.value is not None:
            parts.append(f"value={_quote(self.value)}")
        if self.focused:
            parts.append("focused")
        return " ".join(parts)


def _quote(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 3] + "..."
    return '"' + text.replace('"', "'") + '"'


def _role(node: DOMElement) -> str:
    tag = node.tag
    if tag.startswith("input_"):
        kind = tag[len("input_"):]
        if kind in TEXT_INPUTS:
            return TEXT_INPUTS[kind]
        if kind in ("checkbox", "radio"):
            return kind
        if kind in CLICKABLE_INPUTS:
            return "button"
        return f"{kind} input"
    if tag == "a" or (tag == "span" and "alink" in node.classes.split()):
        return "link"
    if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
        return "heading"
    return tag


INTERACTIVE = {"button", "link", "checkbox", "radio", "select", "textarea"}


def _own_text(node: DOMElement) -> str:
    """A leaf's text, or the text of a node's direct text children."""
    if node.text is not None:
        return node.text.strip()
    return " ".join(c.text.strip() for c in node.children if c.tag == "t" and c.text and c.text.strip())


def elements_from_dom(root: DOMElement, selects: dict[int, dict] | None = None) -> list[Element]:
    """The elements worth showing, in document order. ``selects``: ref -> {options, selected} read from the page."""
    selects = selects or {}
    out: list[Element] = []

    def visit(node: DOMElement, label_text: str | None) -> None:
        if node.tag == "t" or node.ref <= 0:
            return
        role = _role(node)
        text = _own_text(node)
        box_inside = node.tag == "label" and any(c.tag in ("input_checkbox", "input_radio") for c in node.children)
        if box_inside:
            # the label's text names the checkbox or radio it holds; the label itself is not listed
            for child in node.children:
                visit(child, text)
            return
        el = Element(ref=node.ref, role=role, tag=node.tag, classes=node.classes or "", html_id=node.id or "",
                     focused=bool(node.focused))
        if role in ("checkbox", "radio"):
            el.checked = bool(node.value)
            el.text = label_text or text
        elif role == "select":
            info = selects.get(node.ref, {})
            el.options = tuple(info.get("options", ()))
            index = info.get("selected", -1)
            el.value = el.options[index] if 0 <= index < len(el.options) else ""
        elif node.tag.startswith("input_") and role != "button" or role == "textarea":
            el.value = "" if node.value is None else str(node.value)
        elif role == "button" and node.tag.startswith("input_"):
            el.text = str(node.value or "")
        else:
            el.text = text
        is_input = node.tag.startswith("input_") or role in INTERACTIVE or role.endswith(" input")
        if is_input or el.text:
            out.append(el)
        for child in node.children:
            visit(child, None)

    visit(root, None)
    return out


def render_page(utterance: str, elements: list[Element]) -> str:
    lines = [f"Task: {utterance.strip()}"]
    shown = elements[:MAX_ELEMENTS]
    lines += [el.render() for el in shown]
    if len(elements) > len(shown):
        lines.append(f"({len(elements) - len(shown)} more elements not shown)")
    if not elements:
        lines.append("(no elements)")
    return "\n".join(lines)
