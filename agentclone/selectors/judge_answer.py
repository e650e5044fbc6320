"""Reading a judge's answer: which steps it picked, in which category, and why.

Judges answer in many shapes: the JSON list we ask for, JSON wrapped in a code
fence or in prose, a dict keyed by step or by category, a JSON answer cut off
by the token limit, single-quoted Python literals, or plain prose ("Step 3 is a
critical action because ..."). ``parse_judge_answer`` reads all of these and
reports what it could not use; it never raises.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

CATEGORIES = ("plan creation", "critical observation", "critical action", "self correction")

_SEP = r"[\s_\-]*"
_EXACT = [(c, re.compile(r"\b" + _SEP.join(c.split()) + r"\b", re.I)) for c in CATEGORIES]
_KEYWORDS = [
    ("self correction", re.compile(r"\bself" + _SEP + r"correct\w*|\bcorrect\w*\b|\bmistake|\berror\b|\brecover\w*", re.I)),
    ("plan creation", re.compile(r"\bplan\w*|\bsub" + _SEP + r"goals?\b|\bstrateg\w*", re.I)),
    ("critical observation", re.compile(r"\bobserv\w*|\bnotic\w*", re.I)),
    ("critical action", re.compile(r"\baction\b|\bdecisive\w*|\bcrafts?\b|\bcrafting\b", re.I)),
]

_STEP_KEYS = ("step", "step_number", "step_index", "step_id", "stepnumber", "index", "idx", "id", "number", "n", "turn")
_CATEGORY_KEYS = ("category", "categories", "type", "label", "kind", "class", "criticality", "tag")
_REASON_KEYS = ("reason", "reasoning", "rationale", "explanation", "why", "justification", "description", "comment")
_SCORE_KEYS = ("score", "confidence", "importance", "weight")

# "step 3", "Step #3", "steps 2, 4 and 6", "steps 2-4", "step 3 to 5"
_STEP_MENTION = re.compile(
    r"\bsteps?\s*(?:#|no\.?|number)?\s*(\d{1,4})((?:\s*(?:,|and|&|or|to|through|-|–)\s*(?:steps?\s*)?(?:#\s*)?\d{1,4})*)",
    re.I,
)
# "3: critical action" / "3) plan creation" / "- 3 - self correction" at the start of a line
_NUMBERED_LINE = re.compile(r"^\s*(?:[-*•]\s*)?(\d{1,4})\s*[:.)\-–]\s*(.*)$")
_ECHO_LINE = re.compile(r"^\s*(observation|thought)\s*:", re.I | re.M)


@dataclass
class JudgePick:
    step: int  # 1-based, as shown to the judge
    category: str | None = None
    reason: str | None = None
    score: float | None = None


@dataclass
class JudgeAnswer:
    picks: list[JudgePick] = field(default_factory=list)  # valid, distinct, in the judge's order
    problems: list[str] = field(default_factory=list)
    shape: str = "none"  # json, json-fragments, prose, none

    @property
    def ok(self) -> bool:
        return bool(self.picks)


def normalize_category(text: Any) -> str | None:
    """One of CATEGORIES for a category label or a sentence mentioning one (the earliest mention wins)."""
    if text is None:
        return None
    if isinstance(text, (list, tuple)):
        for item in text:
            cat = normalize_category(item)
            if cat:
                return cat
        return None
    text = str(text)
    for table in (_EXACT, _KEYWORDS):
        hits = [(m.start(), cat) for cat, rx in table if (m := rx.search(text))]
        if hits:
            return min(hits)[1]
    return None


def parse_judge_answer(text: str | None, n_steps: int, actions: list[str] | None = None) -> JudgeAnswer:
    """Read the steps (1-based, within ``1..n_steps``) a judge picked from its answer ``text``.

    With ``actions`` (the trajectory's actions, in order), an answer that names no
    step number but quotes a step's action ("crafts 4 stone stairs using 6 stone")
    picks that step.
    """
    answer = JudgeAnswer()
    if not text or not text.strip():
        answer.problems.append("empty answer")
        return answer
    raw: list[JudgePick] = []
    data = _load_json(text)
    if data is not None:
        raw = _from_json(data, n_steps)
        answer.shape = "json"
    fragments = _from_fragments(text)
    if len(fragments) > len(raw):  # JSON cut off by the token limit: its complete part says less
        raw, answer.shape = fragments, "json-fragments"
    if not raw:
        if len(_ECHO_LINE.findall(text)) >= 2:
            answer.problems.append("the answer repeats the demonstration instead of picking steps")
            return answer
        raw = _from_prose(text)
        if raw:
            answer.shape = "prose"
    if not raw and actions:
        raw = _from_quoted_actions(text, actions)
        if raw:
            answer.shape = "quoted-action"
    seen: set[int] = set()
    for pick in raw:
        if not 1 <= pick.step <= n_steps:
            answer.problems.append(f"step {pick.step} is not a step of this trajectory (1-{n_steps})")
            continue
        if pick.step in seen:
            continue
        seen.add(pick.step)
        answer.picks.append(pick)
    if not answer.picks and not answer.problems:
        answer.problems.append("no step numbers found in the answer")
    return answer


# -- JSON -------------------------------------------------------------------------------------


def _load_json(text: str) -> Any:
    """The first JSON (or Python literal) value in ``text``: fenced, bare, or embedded in prose."""
    candidates = [m.group(1) for m in re.finditer(r"```(?:json|python|JSON)?\s*(.*?)```", text, re.S)]
    stripped = text.strip()
    candidates.append(stripped)
    for opener, closer in (("[", "]"), ("{", "}")):
        start, end = stripped.find(opener), stripped.rfind(closer)
        if 0 <= start < end:
            candidates.append(stripped[start : end + 1])
    for cand in candidates:
        cand = cand.strip()
        if not cand or cand[0] not in "[{":
            continue
        for loader in (json.loads, _literal, _json_relaxed):
            try:
                return loader(cand)
            except Exception:
                continue
    return None


def _literal(text: str) -> Any:
    return ast.literal_eval(text)


def _json_relaxed(text: str) -> Any:
    """JSON with trailing commas or // comments, as small models write it."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r",\s*([\]}])", r"\1", text)
    return json.loads(text)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = re.match(r"\s*(?:steps?\s*)?#?\s*(\d{1,4})\b", value, re.I)
        if m:
            return int(m.group(1))
    return None


def _first(d: dict, keys: tuple[str, ...]) -> Any:
    lower = {str(k).lower().replace(" ", "_"): v for k, v in d.items()}
    for key in keys:
        if key in lower:
            return lower[key]
    return None


def _from_json(data: Any, n_steps: int) -> list[JudgePick]:
    if isinstance(data, list):
        out: list[JudgePick] = []
        for item in data:
            out.extend(_from_item(item))
        return out
    if isinstance(data, dict):
        # a single pick
        if _first(data, _STEP_KEYS) is not None:
            return _from_item(data)
        # {"plan creation": [1], "critical action": [3, 4]}
        by_category: list[JudgePick] = []
        for key, value in data.items():
            cat = normalize_category(key)
            steps = value if isinstance(value, list) else [value]
            if cat and steps and all(_as_int(s) is not None for s in steps):
                by_category.extend(JudgePick(step=_as_int(s), category=cat) for s in steps)
        if by_category:
            return by_category
        # {"critical_steps": [...]} or any other list-valued key
        for value in data.values():
            if isinstance(value, list):
                picks = _from_json(value, n_steps)
                if picks:
                    return picks
        # {"2": "critical action", "5": {"category": ...}} or {"step 2": "..."}
        by_step: list[JudgePick] = []
        for key, value in data.items():
            step = _as_int(key)
            if step is None:
                continue
            if isinstance(value, dict):
                pick = _from_item({**value, "step": step})
                by_step.extend(pick)
            else:
                by_step.append(JudgePick(step=step, category=normalize_category(value), reason=_text(value)))
        return by_step
    step = _as_int(data)
    return [JudgePick(step=step)] if step is not None else []


def _from_item(item: Any) -> list[JudgePick]:
    if isinstance(item, str) and (picks := _from_prose(item)):
        return picks
    step = _as_int(item)
    if step is not None:
        return [JudgePick(step=step)]
    if isinstance(item, (list, tuple)) and item:
        # [3, "critical action", "reason"]
        step = _as_int(item[0])
        if step is not None:
            rest = [x for x in item[1:] if isinstance(x, str)]
            return [JudgePick(step=step, category=normalize_category(rest[0]) if rest else None,
                              reason=rest[1] if len(rest) > 1 else None)]
        return []
    if not isinstance(item, dict):
        return []
    value = _first(item, _STEP_KEYS)
    steps = value if isinstance(value, list) else [value]
    steps = [s for s in (_as_int(v) for v in steps) if s is not None]
    if not steps:
        return []
    category_value = _first(item, _CATEGORY_KEYS)
    category = normalize_category(category_value)
    reason = _text(_first(item, _REASON_KEYS))
    if category is None and reason:
        category = normalize_category(reason)
    score = _first(item, _SCORE_KEYS)
    score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None
    return [JudgePick(step=s, category=category, reason=reason, score=score) for s in steps]


def _text(value: Any, limit: int = 300) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = " ".join(str(value).split())
    return text[:limit] or None


# -- fragments of JSON (cut off by the token limit) --------------------------------------------

_KEY_STEP = re.compile(r"[\"']?(?:step(?:_?(?:number|index|id))?|index)[\"']?\s*[:=]\s*[\"']?(\d{1,4})", re.I)
_KEY_CATEGORY = re.compile(r"[\"']?(?:category|type|label)[\"']?\s*[:=]\s*[\"']([^\"']*)", re.I)
_KEY_REASON = re.compile(r"[\"']?(?:reason|rationale|explanation|why)[\"']?\s*[:=]\s*[\"']([^\"']*)", re.I)


def _from_fragments(text: str) -> list[JudgePick]:
    """``"step": 3, "category": "..."`` pairs, read one segment per step key."""
    marks = list(_KEY_STEP.finditer(text))
    picks = []
    for i, m in enumerate(marks):
        segment = text[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        cat = _KEY_CATEGORY.search(segment)
        why = _KEY_REASON.search(segment)
        picks.append(JudgePick(step=int(m.group(1)), category=normalize_category(cat.group(1)) if cat else None,
                               reason=_text(why.group(1)) if why else None))
    return picks


# -- prose --------------------------------------------------------------------------------------


def _expand(first: str, rest: str) -> list[int]:
    """``3`` + ``, 5 and 7-9`` -> [3, 5, 7, 8, 9] (ranges capped at 50 steps)."""
    numbers = [int(first)]
    for sep, num in re.findall(r"(,|and|&|or|to|through|-|–)\s*(?:steps?\s*)?(?:#\s*)?(\d{1,4})", rest, re.I):
        n = int(num)
        if sep.lower() in ("to", "through", "-", "–") and numbers and numbers[-1] < n <= numbers[-1] + 50:
            numbers.extend(range(numbers[-1] + 1, n + 1))
        else:
            numbers.append(n)
    return numbers


def _from_prose(text: str) -> list[JudgePick]:
    mentions = list(_STEP_MENTION.finditer(text))
    picks: list[JudgePick] = []
    if mentions:
        for i, m in enumerate(mentions):
            end = mentions[i + 1].start() if i + 1 < len(mentions) else len(text)
            segment = text[m.end() : end]
            line_end = segment.find("\n\n")
            segment = segment if line_end < 0 else segment[:line_end]
            category = normalize_category(segment)
            reason = _text(segment.strip(" :.-–—\n"), 200)
            for step in _expand(m.group(1), m.group(2)):
                picks.append(JudgePick(step=step, category=category, reason=reason))
        return picks
    for line in text.splitlines():
        m = _NUMBERED_LINE.match(line)
        if m and normalize_category(m.group(2)):
            picks.append(JudgePick(step=int(m.group(1)), category=normalize_category(m.group(2)),
                                   reason=_text(m.group(2), 200)))
    if picks:
        return picks
    # a bare list of numbers: "2, 5, 7" / "2 and 5"
    if re.fullmatch(r"[\s\d,;&.\[\]()]*(?:and[\s\d,;&.]*)*", text.strip(), re.I):
        return [JudgePick(step=int(n)) for n in re.findall(r"\d{1,4}", text)]
    return []


# -- quoted actions -----------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _overlap(action: list[str], line: set[str]) -> float:
    """Share of the action's words found in the line ("crafts" counts for "craft")."""
    def found(word: str) -> bool:
        return word in line or (len(word) >= 4 and any(w.startswith(word) for w in line))

    return sum(found(w) for w in action) / len(action) if action else 0.0


def _from_quoted_actions(text: str, actions: list[str], threshold: float = 0.5, margin: float = 0.15) -> list[JudgePick]:
    """Steps whose action a line of the answer quotes or paraphrases ("crafts 4 stone stairs using 6 stone").

    A line can pick a step only if it uses the action's verb ("crafts" for
    "craft ..."); among those, it picks the step whose action words it covers
    best, when it covers at least ``threshold`` of them and clearly more
    (``margin``) than any other. So "the agent crafts the planks using 1 oak log"
    picks the crafting step, never "get 1 oak log". The line's category comes along.
    """
    words = [_words(a) for a in actions]
    picks = []
    for line in text.splitlines():
        seen = set(_words(line))
        if not seen:
            continue
        scores = sorted(
            ((_overlap(w, seen), i) for i, w in enumerate(words) if w and _overlap(w[:1], seen) == 1.0), reverse=True
        )
        if not scores:
            continue
        best, index = scores[0]
        runner_up = scores[1][0] if len(scores) > 1 else 0.0
        if best >= threshold and best - runner_up >= margin:
            picks.append(JudgePick(step=index + 1, category=normalize_category(line), reason=_text(line, 200)))
    return picks
