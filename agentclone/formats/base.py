"""Trajectory file formats of the field: the ``Format`` interface, the mapping between a chat
conversation and a ``Trajectory``, streaming readers and atomic writers.

A format turns one record (a JSON object) into a ``Trajectory`` (``decode``) and back (``encode``).
Everything else is shared: reading JSON arrays or JSON Lines record by record, or tables (a Parquet
file, a Hugging Face dataset folder, a ``save_to_disk`` folder, a hub dataset: ``agentclone.formats.hf``)
batch by batch, with Arrow's nulls read as absent fields; writing JSON / JSON Lines, one Parquet file or
a dataset folder with its card through a temporary file or folder that replaces the target only when
every record was good; and one error message (file, record and line or row, field) for a bad record.

The mapping, for every format:

- the system prompt (or, without one, what the format's own convention says) is the trajectory's
  ``instructions``; agentclone's own system prompts end with the action format's hint, which is
  removed on import (agentclone appends it again when it renders the trajectory);
- each user turn and the assistant turn after it are one ``Step``: the user turn is the
  observation; the assistant turn is parsed with the ``ActionFormat`` (``Thought: ...`` /
  ``Action: ...``). When the text is exactly what agentclone renders for the parsed thought and
  action, the step holds them; otherwise the step keeps the whole text in ``raw_output`` with
  ``info["verbatim"] = True`` (and ``info["parse_error"]`` when it did not parse; ``action`` is then
  the whole text), and agentclone renders that text unchanged;
- a per-turn loss flag becomes ``Step.loss``; a turn without one gets the ``--loss`` rule
  (``all``: every assistant turn; ``last``: only the last one);
- a user turn after the last assistant turn is the ``final_observation`` (shown to nobody, trained on
  by nothing).

agentclone -> format -> agentclone gives back the same chat messages (``trajectory_messages``) and,
for formats with per-turn loss, the same loss flags (tests/test_formats.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Literal

from agentclone.data import AtomicFile, Step, Trajectory
from agentclone.errors import UserError
from agentclone.prompting import ActionFormat, ParseError, assistant_text, system_prompt

LossRule = Literal["all", "last"]
HINTS = tuple(ActionFormat(name).hint for name in ("thought-action", "action"))


class FormatError(UserError):
    """A record that cannot be read or written: the message names file, record, line and field."""


class RecordError(ValueError):
    """Raised by a format for a bad record: ``field`` is a path inside the record (``conversations[3].from``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Turn:
    """One chat turn: ``role`` is ``user`` or ``assistant``; ``loss`` None when the record had no flag."""

    role: str
    content: str
    loss: bool | None = None
    field: str = ""  # where it was in the record, for error messages


@dataclass
class ImportStats:
    records: int = 0
    steps: int = 0
    flagged_turns: int = 0  # assistant turns whose loss came from the file
    rule_turns: int = 0  # assistant turns whose loss came from the --loss rule
    loss_steps: int = 0
    verbatim_steps: int = 0
    unparsed_steps: int = 0
    meta_restored: int = 0  # records whose ``agentclone`` key gave back the whole trajectory
    meta_stale: int = 0  # records whose ``agentclone`` key no longer matches their messages (messages won)


@dataclass
class ImportOptions:
    env_id: str = "imported"
    success: bool = False  # the formats do not say whether an episode succeeded: what to record
    loss: LossRule = "all"
    fmt: ActionFormat = field(default_factory=ActionFormat)
    stats: ImportStats = field(default_factory=ImportStats)  # filled in while reading


@dataclass
class ExportOptions:
    fmt: ActionFormat = field(default_factory=ActionFormat)
    name: str | None = None  # a dataset name, for formats that register one (llamafactory)
    keep_meta: bool = False  # add the whole trajectory under the record's ``agentclone`` key


@dataclass
class ExportStats:
    records: int = 0
    skipped_empty: int = 0  # trajectories without steps: nothing to train on, and some formats refuse them
    steps: int = 0
    loss_steps: int = 0
    loss_all: int = 0  # trajectories with loss on every assistant turn
    loss_last: int = 0  # ... on the last one only (and not all: one-step trajectories count as loss_all)
    loss_other: int = 0  # ... on other turns (or on none)
    notes: list[str] = field(default_factory=list)


class Format:
    """A trajectory file format. Subclass it, set ``name``, implement ``decode`` and ``encode``, and
    register the class with the ``register_formats`` hook."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: whether the format has a per-turn loss flag (formats without one lose ``Step.loss`` on export)
    carries_loss: ClassVar[bool] = False
    #: where the per-turn loss flag is in a record (for the dataset card of ``export --hf-dataset``)
    loss_field: ClassVar[str] = ""
    #: whether export skips trajectories without steps (chat formats do: nothing to train on)
    skip_empty: ClassVar[bool] = True

    def decode(self, record: dict, index: int, opts: ImportOptions) -> Trajectory:
        """One record (a JSON object) as a trajectory; raise ``RecordError(field, message)`` if it is bad."""
        raise NotImplementedError

    def encode(self, traj: Trajectory, opts: ExportOptions) -> dict:
        """One trajectory as a record of this format."""
        raise NotImplementedError

    def prepare_import(self, path: Path, opts: ImportOptions) -> None:
        """Called once before the first record of a file or folder (a format may read a sidecar file)."""

    def prepare_export(self, path: Path, opts: ExportOptions) -> None:
        """Called once before the first record is written (a format may check a sidecar file)."""

    def finish_export(self, path: Path, opts: ExportOptions, stats: ExportStats) -> None:
        """Called once after the output file is in place (a format may write a sidecar file, add notes)."""


# -- conversation <-> trajectory ------------------------------------------------------------------


def strip_hint(system: str) -> str:
    """The instructions of an agentclone system prompt: the text before the action format's hint."""
    for hint in HINTS:
        if system.endswith("\n" + hint):
            return system[: -len(hint) - 1]
    return system


def assistant_fields(text: str, fmt: ActionFormat) -> dict[str, Any]:
    """The ``Step`` fields of an assistant turn: parsed thought and action when agentclone would render
    them as exactly ``text``, else the text kept verbatim (parsed where it parses)."""
    try:
        thought, action = fmt.parse(text)
    except ParseError as exc:
        return {"action": text, "raw_output": text, "info": {"verbatim": True, "parse_error": str(exc)}}
    if fmt.render(action, thought) == text:
        return {"thought": thought, "action": action}
    return {"thought": thought, "action": action, "raw_output": text, "info": {"verbatim": True}}


def conversation_to_trajectory(
    system: str | None,
    turns: list[Turn],
    *,
    task_id: str,
    traj_id: str,
    opts: ImportOptions,
    first_step_info: dict | None = None,
) -> Trajectory:
    """A trajectory from a system prompt and alternating user / assistant turns (user first)."""
    stats = opts.stats
    for i, turn in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn.role != expected:
            raise RecordError(turn.field, f"expected a {expected} turn here (turns alternate, user first), got {turn.role}")
    pairs = [(turns[i], turns[i + 1]) for i in range(0, len(turns) - 1, 2)]
    final = turns[-1].content if len(turns) % 2 == 1 else None
    last = len(pairs) - 1
    steps = []
    for k, (user, reply) in enumerate(pairs):
        fields = assistant_fields(reply.content, opts.fmt)
        if reply.loss is None:
            loss = opts.loss == "all" or k == last
            stats.rule_turns += 1
        else:
            loss = reply.loss
            stats.flagged_turns += 1
        if k == 0 and first_step_info:
            fields["info"] = {**fields.get("info", {}), **first_step_info}
        steps.append(Step(observation=user.content, loss=loss, **fields))
        stats.loss_steps += loss
        stats.verbatim_steps += "raw_output" in fields
        stats.unparsed_steps += "parse_error" in fields.get("info", {})
    stats.steps += len(steps)
    return Trajectory(
        id=traj_id, env_id=opts.env_id, task_id=task_id, policy="imported",
        instructions=strip_hint(system) if system is not None else "",
        steps=steps, final_observation=final, success=opts.success, created_at=0.0,
    )


def trajectory_to_conversation(traj: Trajectory, fmt: ActionFormat) -> tuple[str, list[Turn]]:
    """The system prompt and the user / assistant turns agentclone trains on (``trajectory_messages``)."""
    turns = []
    for step in traj.steps:
        turns.append(Turn("user", step.observation))
        turns.append(Turn("assistant", assistant_text(step, fmt), step.loss))
    return system_prompt(traj.instructions, fmt), turns


# -- record helpers -------------------------------------------------------------------------------


def get_str(obj: dict, key: str, where: str, required: bool = True) -> str | None:
    value = obj.get(key)
    name = f"{where}.{key}" if where else key
    if value is None:
        if required:
            raise RecordError(name, "missing")
        return None
    if not isinstance(value, str):
        raise RecordError(name, f"expected a string, got {type(value).__name__}")
    return value


def get_list(obj: dict, key: str) -> list:
    value = obj.get(key)
    if value is None:
        raise RecordError(key, "missing")
    if not isinstance(value, list):
        raise RecordError(key, f"expected a list, got {type(value).__name__}")
    return value


def get_loss(obj: dict, key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise RecordError(f"{where}.{key}", f"expected true, false or null, got {value!r}")


def record_task_id(record: dict, index: int, keys: tuple[str, ...] = ("item_id", "id")) -> str:
    for key in keys:
        value = record.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return str(index)


# -- reading: JSON arrays and JSON Lines, record by record ----------------------------------------

CHUNK = 1 << 16


def iter_records(path: Path) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(index, line, value)`` for each record of a JSON array or JSON Lines file, streaming.

    The first non-blank character decides: ``[`` is a JSON array (read incrementally with
    ``json.JSONDecoder.raw_decode`` over chunks), anything else JSON Lines (one value a line, blank
    lines skipped). ``line`` is where the record starts. A syntax error is a ``FormatError``.
    """
    with open(path, "rb") as fh:
        head = fh.read(CHUNK)
        start = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
        first = start.lstrip()[:1]
        fh.seek(len(head) - len(start))
        if first == b"[":
            yield from _iter_array(path, fh)
        else:
            yield from _iter_lines(path, fh)


def _iter_lines(path: Path, fh) -> Iterator[tuple[int, int, Any]]:
    index = 0
    for lineno, raw in enumerate(fh, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{path}: line {lineno}: not valid UTF-8 (byte {exc.start})") from None
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{path}: record {index} (line {lineno}): not valid JSON ({exc.msg} at column {exc.colno})") from None
        yield index, lineno, value
        index += 1


def _iter_array(path: Path, fh) -> Iterator[tuple[int, int, Any]]:
    decoder = json.JSONDecoder()
    reader = _Utf8Chunks(path, fh)
    buf, pos, line, eof = "", 0, 1, False  # line: the line number of buf[pos]

    def more(size: int = 0) -> bool:
        nonlocal buf, pos, eof
        chunk = reader.read(size or CHUNK)
        if not chunk:
            eof = True
            return False
        buf = buf[pos:] + chunk
        pos = 0
        return True

    def skip_ws() -> None:
        nonlocal pos, line
        while True:
            n = len(buf)
            while pos < n and buf[pos] in " \t\r\n":
                if buf[pos] == "\n":
                    line += 1
                pos += 1
            if pos < n or not more():
                return

    def fail(message: str, index: int | None = None) -> FormatError:
        where = f"record {index} (line {line})" if index is not None else f"line {line}"
        return FormatError(f"{path}: {where}: {message}")

    skip_ws()
    if buf[pos : pos + 1] != "[":
        raise fail("expected a JSON array")
    pos += 1
    index = 0
    skip_ws()
    if buf[pos : pos + 1] == "]":
        pos += 1
    else:
        while True:
            skip_ws()
            size = CHUNK  # a record longer than the buffer: read more, twice as much each time (linear overall)
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    # a value that ends where the buffer ends may continue in the next chunk (a number)
                    if end == len(buf) and not eof and not isinstance(value, (dict, list, str)) and more(size):
                        size *= 2
                        continue
                    break
                except json.JSONDecodeError as exc:
                    if not eof and more(size):
                        size *= 2
                        continue
                    raise fail(f"not valid JSON ({exc.msg})", index) from None
            yield index, line, value
            line += buf.count("\n", pos, end)
            pos = end
            index += 1
            skip_ws()
            sep = buf[pos : pos + 1]
            pos += 1
            if sep == "]":
                break
            if sep != ",":
                raise fail("expected ',' or ']' after a record" if sep else "the array is not closed (truncated file?)",
                           index - 1)
    skip_ws()
    if pos < len(buf):
        raise fail("text after the end of the array")


class _Utf8Chunks:
    """Decode a binary file in chunks without splitting a multi-byte character."""

    def __init__(self, path: Path, fh) -> None:
        import codecs

        self.path, self.fh = path, fh
        self.decoder = codecs.getincrementaldecoder("utf-8")()

    def read(self, size: int) -> str:
        while True:
            data = self.fh.read(size)
            try:
                text = self.decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                raise FormatError(f"{self.path}: not valid UTF-8 ({exc.reason})") from None
            if text or not data:
                return text


# -- writing: atomically, as JSON Lines or a JSON array -------------------------------------------


class AtomicRecordWriter(AtomicFile):
    """Write records to a temporary file next to ``path``; ``commit`` renames it into place, ``abort``
    (or leaving the ``with`` block by an exception) removes it, so no partial output is ever left."""

    def __init__(self, path: Path, array: bool | None = None) -> None:
        super().__init__(path, hidden=True)
        self.array = self.path.suffix == ".json" if array is None else array
        self.count = 0
        if self.array:
            self.fh.write(b"[")

    def write(self, record: Any) -> None:
        text = json.dumps(record, ensure_ascii=False)
        if self.array:
            text = ("\n" if self.count == 0 else ",\n") + text
        else:
            text += "\n"
        self.fh.write(text.encode("utf-8", errors="backslashreplace"))
        self.count += 1

    def commit(self) -> None:
        if self.array:
            self.fh.write(b"\n]\n" if self.count else b"]\n")
        super().commit()


# -- the two operations ---------------------------------------------------------------------------

#: the record key ``export --keep-meta`` writes: the whole agentclone trajectory, so import gives it back
#: exactly (rewards, success, expert labels, ids, ...), as long as the record's messages still match it
META_KEY = "agentclone"


def _restore_meta(traj: Trajectory, meta: Any, opts: ImportOptions, where: str, flagged: bool) -> Trajectory:
    """The trajectory stored under ``META_KEY`` when its messages (and loss flags, where the record has its
    own) are the record's; otherwise the record's messages win and the record counts as stale."""
    from pydantic import ValidationError

    from agentclone.prompting import trajectory_messages

    if isinstance(meta, str):  # a table stores it as JSON text
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{where}: field '{META_KEY}': not valid JSON ({exc.msg})") from None
    if not isinstance(meta, dict):
        raise FormatError(f"{where}: field '{META_KEY}': expected an object, got {type(meta).__name__}")
    try:
        full = Trajectory.model_validate(meta)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise FormatError(f"{where}: field '{META_KEY}.{loc}': {first['msg']}") from None
    mine, theirs = trajectory_messages(traj, opts.fmt), trajectory_messages(full, opts.fmt)
    if mine[0] == theirs[0] and (mine[1] == theirs[1] or not flagged):
        opts.stats.meta_restored += 1
        opts.stats.loss_steps += sum(s.loss for s in full.steps) - sum(s.loss for s in traj.steps)
        return full
    opts.stats.meta_stale += 1
    return traj


def iter_import(fmt: Format, path: str | Path, opts: ImportOptions, split: str = "train") -> Iterator[Trajectory]:
    """Stream the trajectories of a file or folder in format ``fmt``; a bad record raises ``FormatError``.

    A ``.parquet`` file or a folder (a dataset folder, or one ``save_to_disk`` wrote; ``split`` picks
    the split) is read as a table (``agentclone.formats.hf``), anything else as JSON / JSON Lines."""
    from agentclone.formats.hf import is_table_source, iter_table_records

    path = Path(path)
    if not path.exists() or not (path.is_file() or path.is_dir()):
        raise FileNotFoundError(2, "No such file", str(path))
    fmt.prepare_import(path, opts)
    if is_table_source(path):
        records = iter_table_records(path, split)
    else:
        records = ((f"{path}: record {index} (line {line})", record) for index, line, record in iter_records(path))
    yield from decode_records(fmt, records, opts)


def iter_import_hub(fmt: Format, name: str, opts: ImportOptions, split: str = "train") -> Iterator[Trajectory]:
    """Stream the trajectories of Hugging Face Hub dataset ``name`` (``datasets.load_dataset(..., streaming=True)``);
    without a network, one ``UserError`` saying to download it and pass its folder."""
    from agentclone.formats.hf import iter_hub_records

    yield from decode_records(fmt, iter_hub_records(name, split), opts)


def decode_records(fmt: Format, records: Iterable[tuple[str, Any]], opts: ImportOptions) -> Iterator[Trajectory]:
    """The trajectories of ``(where, record)`` pairs; ``where`` (file and record or row) starts error messages."""
    seen: set[str] = set()
    for index, (where, record) in enumerate(records):
        if not isinstance(record, dict):
            raise FormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
        rule_turns = opts.stats.rule_turns
        try:
            traj = fmt.decode(record, index, opts)
        except RecordError as exc:
            raise FormatError(f"{where}: field '{exc.field}': {exc}") from None
        except ValueError as exc:  # pydantic's, from building the Trajectory
            raise FormatError(f"{where}: {exc}") from None
        if META_KEY in record:
            # with every loss flag from the record itself, those flags must match too
            traj = _restore_meta(traj, record[META_KEY], opts, where, flagged=opts.stats.rule_turns == rule_turns)
        if traj.id in seen:  # ids must be unique: `build` keeps the last record of an id
            traj.id = f"{traj.id}#{index}"
        seen.add(traj.id)
        opts.stats.records += 1
        yield traj


def import_file(fmt: Format, path: str | Path, output: str | Path, opts: ImportOptions, split: str = "train",
                from_hub: bool = False) -> ImportStats:
    """Convert ``path`` (format ``fmt``; with ``from_hub``, a hub dataset's name) into an agentclone trajectory
    file, atomically."""
    trajs = iter_import_hub(fmt, str(path), opts, split) if from_hub else iter_import(fmt, path, opts, split)
    with AtomicRecordWriter(Path(output), array=False) as out:
        for traj in trajs:
            out.write(traj.model_dump(mode="json", by_alias=True))
    return opts.stats


def _encode_all(fmt: Format, trajs: Iterable[Trajectory], opts: ExportOptions, stats: ExportStats,
                table: bool = False) -> Iterator[dict]:
    """The records of ``trajs``, counted in ``stats``; in a table (``table``) the ``agentclone`` key is a JSON string,
    since a trajectory's free-form fields have no one Arrow type."""
    for traj in trajs:
        if not traj.steps and fmt.skip_empty:
            stats.skipped_empty += 1
            continue
        record = fmt.encode(traj, opts)
        if opts.keep_meta:
            meta = traj.model_dump(mode="json", by_alias=True)
            record[META_KEY] = json.dumps(meta, ensure_ascii=False) if table else meta
        flags = [s.loss for s in traj.steps]
        stats.records += 1
        stats.steps += len(flags)
        stats.loss_steps += sum(flags)
        if flags and all(flags):
            stats.loss_all += 1
        elif flags and flags[-1] and not any(flags[:-1]):
            stats.loss_last += 1
        else:
            stats.loss_other += 1
        yield record


def export_file(fmt: Format, trajs: Iterable[Trajectory], output: str | Path, opts: ExportOptions,
                hf_dataset: bool = False, command: str | None = None) -> ExportStats:
    """Write ``trajs`` as format ``fmt``, atomically; trajectories without steps are skipped (and counted).

    The output is a JSON array for a ``.json`` path, one Parquet file for a ``.parquet`` path, JSON Lines
    otherwise; with ``hf_dataset`` a dataset folder that ``datasets.load_dataset(output)`` opens:
    ``data/train-00000-of-00001.parquet`` and a dataset card ``README.md`` (which names ``command``). A
    format's sidecar hooks (``prepare_export`` / ``finish_export``) run for files, not for dataset folders."""
    from agentclone.formats import hf

    output = Path(output)
    stats = ExportStats()
    if hf_dataset:
        card = lambda info: hf.dataset_card(fmt, info, stats, command, output)  # noqa: E731
        hf.write_dataset_folder(_encode_all(fmt, trajs, opts, stats, table=True), output, card)
    else:
        fmt.prepare_export(output, opts)
        if output.suffix == ".parquet":
            hf.write_parquet(_encode_all(fmt, trajs, opts, stats, table=True), output)
        else:
            with AtomicRecordWriter(output) as out:
                for record in _encode_all(fmt, trajs, opts, stats):
                    out.write(record)
    if not fmt.carries_loss and stats.loss_steps < stats.steps:
        stats.notes.append(
            f"{fmt.name} has no per-turn loss flag: {stats.steps - stats.loss_steps} of {stats.steps} assistant turns "
            "had loss=false in agentclone and are written like the others (a trainer of this format trains them)"
        )
    if not hf_dataset:
        fmt.finish_export(output, opts, stats)
    return stats
