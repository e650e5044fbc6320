"""LLaMA-Factory: a ShareGPT-style data file plus its entry in ``dataset_info.json``.

Export writes the data file (``.json``: a JSON array, else JSON Lines; LLaMA-Factory reads both)
and adds an entry, named ``--name`` (default: the file's stem), to ``dataset_info.json`` in the same
folder (created, or updated keeping the other entries), with the ``columns`` and ``tags`` mapping
LLaMA-Factory needs to read it. Point LLaMA-Factory's ``dataset_dir`` at that folder and set
``dataset: NAME``.

LLaMA-Factory has no per-turn loss key: it trains every assistant turn, or with ``mask_history:
true`` in its training config only the last one. Export says which of the two matches the
trajectories' loss flags, and counts the trajectories that neither matches.

Import reads the same layout: when a ``dataset_info.json`` next to the file has an entry whose
``file_name`` is the file, its ``columns`` and ``tags`` say where messages, roles and the system
prompt are.
"""

from __future__ import annotations

import json
from pathlib import Path

from agentclone.data import Trajectory, atomic_write_text
from agentclone.formats.base import ExportOptions, ExportStats, FormatError, ImportOptions
from agentclone.formats.sharegpt import ShareGPT

INFO = "dataset_info.json"


class LlamaFactory(ShareGPT):
    name = "llamafactory"
    description = "LLaMA-Factory sharegpt data file + its dataset_info.json entry (columns, tags)"
    carries_loss = False

    def __init__(self) -> None:
        self.patterns = {"all": 0, "last": 0, "other": 0}

    # -- import --------------------------------------------------------------------------------

    def prepare_import(self, path: Path, opts: ImportOptions) -> None:
        info_path = path.parent / INFO
        if not info_path.is_file():
            return
        for entry in _read_info(info_path).values():
            if isinstance(entry, dict) and entry.get("file_name") == path.name:
                self._apply_entry(info_path, entry)
                return

    def _apply_entry(self, info_path: Path, entry: dict) -> None:
        formatting = entry.get("formatting", "alpaca")
        if formatting != "sharegpt":
            raise FormatError(f"{info_path}: the entry for this file has formatting {formatting!r}; "
                              "agentclone reads LLaMA-Factory's sharegpt formatting only")
        columns, tags = entry.get("columns") or {}, entry.get("tags") or {}
        self.messages_key = columns.get("messages", "conversations")
        self.system_key = columns.get("system")
        self.role_key = tags.get("role_tag", "from")
        self.content_key = tags.get("content_tag", "value")
        self.user_tags = (tags.get("user_tag", "human"), tags.get("observation_tag", "observation"))
        self.assistant_tags = (tags.get("assistant_tag", "gpt"), tags.get("function_tag", "function_call"))
        self.system_tag = tags.get("system_tag", "system")

    # -- export --------------------------------------------------------------------------------

    def prepare_export(self, path: Path, opts: ExportOptions) -> None:
        info_path = path.parent / INFO
        if info_path.is_file():
            _read_info(info_path)  # refuse a broken one before writing anything

    def encode(self, traj: Trajectory, opts: ExportOptions) -> dict:
        flags = [s.loss for s in traj.steps]
        if all(flags):
            self.patterns["all"] += 1
        if flags[-1] and not any(flags[:-1]):
            self.patterns["last"] += 1
        if not (all(flags) or (flags[-1] and not any(flags[:-1]))):
            self.patterns["other"] += 1
        return super().encode(traj, opts)

    def finish_export(self, path: Path, opts: ExportOptions, stats: ExportStats) -> None:
        info_path = path.parent / INFO
        info = _read_info(info_path) if info_path.is_file() else {}
        name = opts.name or path.stem
        info[name] = {
            "file_name": path.name,
            "formatting": "sharegpt",
            "columns": {"messages": self.messages_key, "system": self.system_key},
            "tags": {"role_tag": self.role_key, "content_tag": self.content_key,
                     "user_tag": self.user_tag, "assistant_tag": self.assistant_tag},
        }
        atomic_write_text(info_path, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        stats.notes = [n for n in stats.notes if "no per-turn loss flag" not in n]
        stats.notes.append(f"dataset {name!r} added to {info_path} (LLaMA-Factory: dataset_dir: {path.parent}, "
                           f"dataset: {name})")
        n, p = stats.records, self.patterns
        if n and p["all"] == n:
            stats.notes.append("loss: every assistant turn in every trajectory, which is what LLaMA-Factory trains "
                               "by default")
        elif n and p["last"] == n:
            stats.notes.append("loss: only the last assistant turn in every trajectory: set `mask_history: true` in "
                               "LLaMA-Factory's training config (it has no per-turn loss key)")
        elif n:
            stats.notes.append(
                f"warning: LLaMA-Factory has no per-turn loss key; it trains every assistant turn, or only the last "
                f"with `mask_history: true`. {p['all']} of {n} trajectories have loss on every turn, "
                f"{p['last']} only on the last, {p['other']} on other turns: those lose their loss flags")


def _read_info(path: Path) -> dict:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise FormatError(f"{path}: expected a JSON object of dataset entries, got {type(info).__name__}")
    return info
