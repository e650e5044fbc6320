"""MiniWoB++ task pages (the ``miniwob`` 1.1.0 package) in a real headless Chromium, as a text environment.

A task is one MiniWoB++ page and one seed (``click-button/17``): the page's ``Math.seedrandom``
makes the same problem from the same seed. Training and held-out tasks use disjoint seed ranges
(``0..`` and ``1000000..``) of the same pages.

The env owns one browser (``agentclone_miniwob.browser``), started on the first ``reset`` and
reused for every episode after it, also across task pages. If the browser dies in an episode,
``step`` raises ``BrowserError`` (the rollout engine records the episode as errored) and the
next ``reset`` starts a new browser. ``close()`` shuts it down; an exit closes what is left.

MiniWoB++'s protocol (seeding, starting an episode, reading the utterance, fields, DOM and reward,
performing actions) is the package's own ``SeleniumInstance``, given our browser's driver. The
page's wall-clock limit (10 s by default) is lifted unless ``time_limit_s`` is set: on a CPU a
language model can take longer than that to write one action.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from agentclone.data import Task
from agentclone.envs import ExpertAction, InvalidAction, TextEnv
from agentclone_miniwob.actions import Command, parse_action
from agentclone_miniwob.browser import Browser, BrowserError
from agentclone_miniwob.experts import EXPERTS, View, expert_action
from agentclone_miniwob.page import Element, elements_from_dom, render_page

HELDOUT_SEED_BASE = 1_000_000
NO_TIME_LIMIT_MS = 2**31 - 1  # setTimeout's largest delay (about 24 days)
WAIT_S = 0.5

#: Tasks with a scripted expert, in the order the suite lists them.
EXPERT_TASKS = (
    "click-test", "click-test-2", "click-button", "click-button-sequence", "click-link", "click-tab",
    "click-dialog", "click-dialog-2", "click-widget", "click-collapsible-nodelay", "click-checkboxes",
    "click-option", "choose-list", "focus-text", "focus-text-2", "enter-text", "enter-text-2",
    "enter-password", "login-user", "unicode-test",
)

_SELECT_INFO_JS = """
var out = {};
for (const ref of arguments[0]) {
  var el = core.previousDOMInfo[ref];
  if (el && el.options) out[ref] = {options: Array.from(el.options).map(o => o.text), selected: el.selectedIndex};
}
return out;
"""
_STATE_JS = """return {done: WOB_DONE_GLOBAL, raw_reward: WOB_RAW_REWARD_GLOBAL,
                       reason: WOB_REWARD_REASON, href: window.location.href};"""


def html_dir() -> Path:
    import miniwob

    return Path(miniwob.__file__).parent / "html" / "miniwob"


@lru_cache(maxsize=1)
def available_tasks() -> tuple[str, ...]:
    """Every MiniWoB++ page the package ships (the flight booking pages need a web server: left out)."""
    return tuple(sorted(p.stem for p in html_dir().glob("*.html")))


class MiniWoBEnv(TextEnv):
    """MiniWoB++ web tasks in a headless Chromium: read the page's elements, click, type and select."""

    instructions = (
        "Do the task on the web page. Each line shows one element: [N] role \"text\" and its state. "
        'Actions: `click N`, `type N "text"` (replaces the field\'s text), `select N "option"`, '
        "`press KEY` (Enter, Tab, ...), `wait`. N is the element's number in brackets."
    )

    def __init__(
        self,
        tasks: list[str] | tuple[str, ...] | None = None,
        train_seeds: int = 40,
        heldout_seeds: int = 20,
        max_steps: int = 10,
        time_limit_s: float | None = None,
        data_mode: str = "train",
        **kwargs: Any,
    ) -> None:
        super().__init__(max_steps=max_steps, **kwargs)
        names = list(tasks) if tasks is not None else list(EXPERT_TASKS)
        if not names:
            raise ValueError("tasks is empty; name at least one MiniWoB++ task, e.g. click-button")
        unknown = [n for n in names if n not in available_tasks()]
        if unknown:
            raise ValueError(f"unknown MiniWoB++ task(s): {', '.join(unknown)}; "
                             f"the miniwob package ships: {', '.join(available_tasks())}")
        if train_seeds < 0 or heldout_seeds < 0:
            raise ValueError("train_seeds and heldout_seeds must be >= 0")
        if train_seeds > HELDOUT_SEED_BASE:
            raise ValueError(f"train_seeds must be at most {HELDOUT_SEED_BASE} (held-out seeds start there)")
        if time_limit_s is not None and not 0 < time_limit_s * 1000 < NO_TIME_LIMIT_MS:
            raise ValueError(f"time_limit_s must be positive and below {NO_TIME_LIMIT_MS // 1000}, or None")
        self.task_names = tuple(dict.fromkeys(names))
        self.train_seeds = train_seeds
        self.heldout_seeds = heldout_seeds
        self.time_limit_s = time_limit_s
        self.data_mode = data_mode
        self.browser: Browser | None = None
        self.browsers_started = 0
        self._instance = None  # miniwob's SeleniumInstance for the loaded page
        self._page: str | None = None
        self._url: str | None = None
        self._task_name: str | None = None
        self._utterance = ""
        self._fields: dict[str, str] = {}
        self._elements: dict[int, Element] = {}
        self._clicked: set[int] = set()
        self._done = False

    # -- tasks ----------------------------------------------------------------------------------
    def _tasks(self, split: str) -> list[Task]:
        if split == "train":
            seeds = range(self.train_seeds)
        else:
            seeds = range(HELDOUT_SEED_BASE, HELDOUT_SEED_BASE + self.heldout_seeds)
        return [
            Task(id=f"{name}/{seed}", env_id=self.env_id or "miniwob/suite-v1", split=split, kind=name,
                 data={"task": name, "seed": seed})
            for name in self.task_names
            for seed in seeds
        ]

    # -- the browser ----------------------------------------------------------------------------
    def _browser(self) -> Browser:
        if self.browser is None or self.browser.closed:
            self.browser = Browser()
            self.browsers_started += 1
            self._instance, self._page = None, None
        return self.browser

    def _restart_browser(self) -> None:
        if self.browser is not None:
            self.browser.close()
        self.browser = None
        self._browser()

    def _load(self, name: str) -> None:
        """Open ``name``'s page in the browser (unless it is open already) and lift its time limit."""
        from miniwob.selenium_instance import SeleniumInstance
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.wait import WebDriverWait

        driver = self._browser().driver
        if self._page != name:
            instance = SeleniumInstance(index=0, subdomain=name, headless=True, data_mode=self.data_mode)
            instance.driver = driver  # our browser, started with our flags, instead of its create_driver()
            instance.record_screenshots = False
            self._page, self._instance, self._url = None, instance, instance.url
            driver.get(instance.url)
            WebDriverWait(driver, 10).until(EC.element_to_be_clickable((By.ID, SeleniumInstance.SYNC_SCREEN_ID)))
            self._page = name
        limit_ms = NO_TIME_LIMIT_MS if self.time_limit_s is None else int(self.time_limit_s * 1000)
        driver.execute_script(f"core.EPISODE_MAX_TIME = {limit_ms};")

    def close(self) -> None:
        if self.browser is not None:
            self.browser.close()
        self.browser, self._instance, self._page = None, None, None

    # -- episodes -------------------------------------------------------------------------------
    def _reset(self, task: Task) -> str:
        name = task.data.get("task") or task.id.rsplit("/", 1)[0]
        seed = task.data.get("seed", task.id.rsplit("/", 1)[-1])
        if name not in available_tasks():
            raise ValueError(f"unknown MiniWoB++ task {name!r} (task {task.id!r})")
        self._task_name = name
        self._clicked = set()
        self._done = False
        try:
            return self._start_episode(name, int(seed))
        except Exception:
            # the browser may have died since the last episode: one fresh browser, one more try
            self._restart_browser()
            try:
                return self._start_episode(name, int(seed))
            except Exception as exc:
                self.close()
                raise BrowserError(f"could not start {task.id}: {type(exc).__name__}: {exc}") from exc

    def _start_episode(self, name: str, seed: int) -> str:
        self._load(name)
        obs, infos = [{}], [{}]
        self._instance.reset(obs, infos, seed)
        self._fields = dict(obs[0]["fields"])
        return self._observe(obs[0]["utterance"], infos[0]["root_dom"])

    def _observe(self, utterance: str, root_dom) -> str:
        self._utterance = utterance
        select_refs = _select_refs(root_dom)
        selects = self._instance.driver.execute_script(_SELECT_INFO_JS, select_refs) if select_refs else {}
        elements = elements_from_dom(root_dom, {int(k): v for k, v in selects.items()})
        self._elements = {e.ref: e for e in elements}
        return render_page(utterance, elements)

    def _step(self, action: str) -> tuple[str, float, bool, dict]:
        command = parse_action(action)
        if self._done:
            raise InvalidAction("the episode is over")
        target = self._check(command)
        try:
            self._perform(command, target)
            state = self._instance.driver.execute_script(_STATE_JS)
            if state["href"] != self._url:
                raise BrowserError(f"the page left the task: it is now at {state['href']}")
            if state["done"]:
                self._done = True
                raw = float(state["raw_reward"] or 0.0)
                success = raw > 0
                outcome = "success" if success else f"failure ({state['reason'] or 'wrong answer'})"
                info = {"success": success, "raw_reward": raw, "reason": state["reason"]}
                return f"The episode is over: {outcome}.", raw, True, info
            observation, _ = self._instance.get_observation(use_cached_fields=True)
            return self._observe(observation["utterance"], _["root_dom"]), 0.0, False, {}
        except InvalidAction:
            raise
        except Exception as exc:
            # the browser died or misbehaved: this episode is lost; the next reset starts a new browser
            if self.browser is not None:
                self.browser.close()
            self.browser, self._instance, self._page = None, None, None
            if isinstance(exc, BrowserError):
                raise
            raise BrowserError(f"the browser failed during {str(command)!r}: {type(exc).__name__}: "
                               f"{getattr(exc, 'msg', None) or exc}") from exc

    def _check(self, command: Command) -> Element | None:
        """The element a command acts on; InvalidAction if it is not on the page or cannot take the command."""
        if command.ref is None:
            return None
        el = self._elements.get(command.ref)
        if el is None:
            raise InvalidAction(f"there is no element [{command.ref}] on the page; "
                                "use a number in brackets from the list")
        if command.verb == "type" and not el.typeable:
            raise InvalidAction(f"[{el.ref}] is a {el.role}, not a text field; type into a textbox")
        if command.verb == "select":
            if el.role != "select":
                raise InvalidAction(f"[{el.ref}] is a {el.role}, not a list; select works on a select element")
            if _match_option(el.options, command.text or "") is None:
                options = ", ".join(f'"{o}"' for o in el.options)
                raise InvalidAction(f'[{el.ref}] has no option "{command.text}"; its options: {options}')
        return el

    def _perform(self, command: Command, target: Element | None) -> None:
        """Carry out a command with MiniWoB++'s actions (a select, which they lack, with selenium's Select)."""
        from miniwob.action import ActionSpaceConfig, ActionTypes

        config = _action_config()
        kinds = config.action_types

        def do(kind: ActionTypes, **fields) -> None:
            self._instance.perform({"action_type": kinds.index(kind), **fields}, config)

        if command.verb == "click":
            do(ActionTypes.CLICK_ELEMENT, ref=command.ref)
            self._clicked.add(command.ref)
        elif command.verb == "type":
            do(ActionTypes.CLICK_ELEMENT, ref=command.ref)
            if target is not None and target.value:
                do(ActionTypes.PRESS_KEY, key=config.allowed_keys.index("C-a"))  # typing replaces the selection
                do(ActionTypes.PRESS_KEY, key=config.allowed_keys.index("<Backspace>"))
            if command.text:
                do(ActionTypes.TYPE_TEXT, text=command.text)
        elif command.verb == "select":
            from selenium.webdriver.support.select import Select

            element = self._instance.driver.execute_script("return core.previousDOMInfo[arguments[0]];", command.ref)
            Select(element).select_by_index(_match_option(target.options, command.text))
        elif command.verb == "press":
            do(ActionTypes.PRESS_KEY, key=config.allowed_keys.index(command.text))
        elif command.verb == "wait":
            time.sleep(WAIT_S)

    # -- expert ---------------------------------------------------------------------------------
    def view(self) -> View:
        """What the expert reads: the task's parsed goal and the page as the agent sees it."""
        if self._task_name is None:
            raise RuntimeError("call reset(task) before asking the expert")
        return View(task=self._task_name, utterance=self._utterance, fields=dict(self._fields),
                    elements=list(self._elements.values()), clicked=set(self._clicked))

    def _expert(self) -> ExpertAction:
        return expert_action(self.view())


@lru_cache(maxsize=1)
def _action_config():
    from miniwob.action import ActionSpaceConfig
    from miniwob.constants import TASK_HEIGHT, TASK_WIDTH

    config = ActionSpaceConfig.get_preset("all_supported")
    config.screen_width, config.screen_height = TASK_WIDTH, TASK_HEIGHT
    return config


def _select_refs(root) -> list[int]:
    refs, todo = [], [root]
    while todo:
        node = todo.pop()
        if node.tag == "select":
            refs.append(node.ref)
        todo.extend(node.children)
    return refs


def _match_option(options: tuple[str, ...], wanted: str) -> int | None:
    """Index of the option named ``wanted`` (exact, else ignoring case and spacing)."""
    if wanted in options:
        return options.index(wanted)
    norm = " ".join(wanted.split()).casefold()
    for i, option in enumerate(options):
        if " ".join(option.split()).casefold() == norm:
            return i
    return None


def expert_tasks() -> tuple[str, ...]:
    """Tasks that have a scripted expert."""
    return tuple(t for t in EXPERT_TASKS if t in EXPERTS)
