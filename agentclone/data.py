"""The data model: tasks, steps, trajectories, and their files.

Trajectory files are JSONL, one whole episode a line, appended and fsynced as
each episode ends. A crash mid-write leaves at most a torn last line: readers
report it and keep every earlier episode; writers cut it off before appending.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Task(BaseModel):
    """One thing to do in an environment; ``id`` is stable across runs and machines."""

    model_config = ConfigDict(extra="forbid")

    id: str
    env_id: str = ""
    split: str = "train"
    kind: str = ""  # task type or difficulty, for per-kind breakdowns
    data: dict[str, Any] = Field(default_factory=dict)


class ExpertLabel(BaseModel):
    """What the environment's privileged expert would have done from a step's state (DAgger, LEAP)."""

    model_config = ConfigDict(extra="forbid")

    action: str | None = None
    thought: str | None = None
    error: str | None = None  # why the expert could not act from this state


_QUOTES = "\"'`"


def normalize_action(action: str) -> str:
    """An action in a form where spelling differences that mean nothing are gone: lower case, runs of
    whitespace as one space, surrounding quotes / backticks and a trailing period stripped."""
    text = " ".join(action.split()).lower()
    previous = None
    while text != previous:
        previous = text
        text = text.strip().strip(_QUOTES).strip()
        if text.endswith("."):
            text = text[:-1]
    return text


class Step(BaseModel):
    """The agent saw ``observation``, thought ``thought``, and did ``action``."""

    model_config = ConfigDict(extra="forbid")

    observation: str
    thought: str | None = None
    action: str
    raw_output: str | None = None  # the model's text before parsing, when it came from a model
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    invalid: bool = False
    info: dict[str, Any] = Field(default_factory=dict)
    loss: bool = True  # does this step's assistant turn carry training loss
    selection: dict[str, Any] | None = None  # why a step selector picked (or skipped) this step
    expert: ExpertLabel | None = None  # the expert's action from this step's state (collect with expert_labels)

    @property
    def agrees_with_expert(self) -> bool | None:
        """Did the agent do what the expert would have (``normalize_action`` equality)? None without a
        label, or when the expert could not act from this state."""
        if self.expert is None or self.expert.action is None:
            return None
        return normalize_action(self.action) == normalize_action(self.expert.action)


class Trajectory(BaseModel):
    """One episode: what was run, every step, and how it ended."""

    model_config = ConfigDict(extra="forbid")

    id: str  # stable episode id: task id plus repetition
    env_id: str
    task_id: str
    split: str = "train"
    task_kind: str = ""
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    policy: str = ""
    model: str | None = None
    seed: int | None = None
    instructions: str = ""
    steps: list[Step] = Field(default_factory=list)
    final_observation: str | None = None
    success: bool = False
    return_: float = Field(0.0, alias="return")
    terminated: bool = False
    truncated: bool = False
    timings: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    created_at: float = Field(default_factory=time.time)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @property
    def num_invalid(self) -> int:
        return sum(s.invalid for s in self.steps)

    def to_json_line(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), ensure_ascii=False)

    def content_hash(self) -> str:
        payload = self.model_dump(mode="json", by_alias=True, exclude={"created_at", "timings"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class TrajectoryFileError(ValueError):
    """A trajectory file that cannot be read; the message names file, line and field."""


class TornLineWarning(UserWarning):
    pass


def _describe_validation(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(line)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"field '{loc}': {first['msg']}{more}"


def parse_trajectory_line(line: str, path: str | Path = "<string>", lineno: int = 1) -> Trajectory:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TrajectoryFileError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise TrajectoryFileError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    try:
        return Trajectory.model_validate(obj)
    except ValidationError as exc:
        raise TrajectoryFileError(f"{path}:{lineno}: {_describe_validation(exc)}") from None


def iter_trajectories(path: str | Path, on_torn: str = "warn") -> Iterator[Trajectory]:
    """Stream trajectories from a JSONL file (``iter_trajectory_lines`` without the lines' bytes)."""
    for _, traj in iter_trajectory_lines(path, on_torn):
        yield traj


def iter_trajectory_lines(path: str | Path, on_torn: str = "warn") -> Iterator[tuple[bytes, Trajectory]]:
    """Stream ``(line, trajectory)`` from a JSONL file: each record with its line's bytes as in the file.

    A last line without its newline that does not parse is a torn write from a
    crash: with ``on_torn="warn"`` it is reported on stderr and skipped, with
    ``"raise"`` it is an error. Any other malformed line is an error naming the
    file, the line number and the field.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trajectory file not found: {path}")
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            complete = raw.endswith(b"\n")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if not complete and on_torn == "warn":
                    _warn_torn(path, lineno)
                    return
                raise TrajectoryFileError(f"{path}:{lineno}: not valid UTF-8 (byte {exc.start})") from None
            if not text.strip():
                continue
            try:
                traj = parse_trajectory_line(text, path, lineno)
            except TrajectoryFileError:
                if not complete and on_torn == "warn":
                    _warn_torn(path, lineno)
                    return
                raise
            yield raw, traj


def _warn_torn(path: Path, lineno: int | None) -> None:
    import sys

    where = f"{path}:{lineno}" if lineno is not None else f"{path}"
    what = "skipped it" if lineno is not None else "cut it off before appending"
    print(
        f"warning: {where}: torn last line (an interrupted write); {what} and kept the earlier episodes",
        file=sys.stderr,
    )


def read_trajectories(path: str | Path, on_torn: str = "warn") -> list[Trajectory]:
    """Every record of a JSONL file, in file order.

    A resumed collection appends a new record for an episode whose earlier record ended in an
    error (``Trajectory.error``), so a file may hold several records of one episode id: callers
    that need one record per episode pass the result through ``latest_per_id``.
    """
    return list(iter_trajectories(path, on_torn=on_torn))


def latest_per_id(trajs: Iterable[Trajectory]) -> list[Trajectory]:
    """The last record of each episode id, in the order the ids first appear.

    A rerun of a collection appends a new record for each episode that errored before, so the
    newest record of an id is the one that counts.
    """
    latest: dict[str, Trajectory] = {}
    for traj in trajs:
        latest[traj.id] = traj  # a dict keeps the position of an id's first insertion
    return list(latest.values())


def _repair_torn_tail(path: Path) -> bool:
    """Cut a torn last line (no trailing newline) so appends start on a clean line; True if it cut one."""
    size = path.stat().st_size
    if size == 0:
        return False
    with open(path, "rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return False
        # find the last newline
        pos, chunk = size, 65536
        cut = 0
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            block = fh.read(pos - start)
            idx = block.rfind(b"\n")
            if idx >= 0:
                cut = start + idx + 1
                break
            pos = start
        fh.truncate(cut)
    return True


def lock_path(path: str | Path) -> Path:
    """The sidecar file a ``WriteLock`` of ``path`` (a ``TrajectoryWriter``'s) locks: ``.NAME.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


class WriteLock:
    """An exclusive ``flock`` on ``lock_path(path)`` that records the holder's pid: one process writing ``path`` at
    a time. The kernel drops it when the holder dies, so a killed writer never leaves a stale lock. ``wait``:
    block until the holder releases it; otherwise refuse at once with a ``UserError`` naming the holder's pid.
    Released by ``release`` (or the end of a ``with`` block), which removes the lock file."""

    def __init__(self, path: str | Path, wait: bool = False) -> None:
        self.path = lock_path(path)
        self.fd: int | None = None
        try:
            import fcntl
        except ImportError:  # no flock on this platform: no protection, as before
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                from agentclone.errors import UserError

                who = f"pid {holder}" if holder else "pid unknown"
                raise UserError(
                    f"another process ({who}) is writing {path}; wait for it to finish or choose another --output"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # the holder before us may have removed the file while we opened it: lock the file on disk
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            self.path.unlink(missing_ok=True)  # while still locked: a waiting writer re-checks the file
        finally:
            os.close(fd)  # closing the descriptor drops the lock

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


class TrajectoryWriter:
    """Appends whole episodes to a JSONL file, one fsynced line each.

    One writer per file at a time, across processes: a writer holds an exclusive lock on the
    sidecar file ``.NAME.lock`` (``lock_path``) until ``close`` or the end of its process, and a
    second writer of the same file raises ``UserError`` naming the first one's pid.
    """

    def __init__(self, path: str | Path, mode: str = "a") -> None:
        if mode not in ("a", "w"):
            raise ValueError(f"mode must be 'a' or 'w', got {mode!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = WriteLock(self.path)  # before anything touches the file
        try:
            if mode == "a" and self.path.exists() and _repair_torn_tail(self.path):
                _warn_torn(self.path, None)
            self._fh = open(self.path, mode + "b")
        except BaseException:
            self._lock.release()
            raise

    def write(self, traj: Trajectory) -> None:
        # lone surrogates (undecodable model output) become JSON escapes, so the line stays valid UTF-8
        self._fh.write((traj.to_json_line() + "\n").encode("utf-8", errors="backslashreplace"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        try:
            self._fh.close()
        finally:
            self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_trajectories(path: str | Path, trajs: Iterable[Trajectory]) -> None:
    """Write a whole file atomically (temporary file, then rename)."""
    path = Path(path)
    atomic_write_bytes(path, b"".join((t.to_json_line() + "\n").encode("utf-8", errors="backslashreplace") for t in trajs))


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _process_umask()


def mkstemp_public(**kwargs) -> tuple[int, str]:
    """``tempfile.mkstemp`` whose file gets the mode a plain ``open(path, "w")`` would give (0666 less the umask)
    instead of 0600, so a file renamed into place from it is readable like any other file the user writes."""
    fd, path = tempfile.mkstemp(**kwargs)
    os.fchmod(fd, 0o666 & ~_UMASK)
    return fd, path


def mkdtemp_public(**kwargs) -> Path:
    """``tempfile.mkdtemp`` with the mode of a plain ``mkdir`` (0777 less the umask) instead of 0700."""
    path = Path(tempfile.mkdtemp(**kwargs))
    os.chmod(path, 0o777 & ~_UMASK)
    return path


class AtomicFile:
    """A binary temporary file next to ``path``: ``commit`` fsyncs it and renames it into place, ``abort``
    removes it; as a ``with`` block it commits unless the block raised. No partial ``path`` is ever seen."""

    def __init__(self, path: str | Path, hidden: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{self.path.name}." if hidden else f"{self.path.name}."
        fd, self.tmp = mkstemp_public(prefix=prefix, suffix=".tmp", dir=self.path.parent)
        self.fh = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self.fh.write(data)

    def commit(self) -> None:
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        Path(self.tmp).unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.fh.closed:
            self.commit()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with AtomicFile(path) as out:
        out.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def refuse_unless_empty(folder: Path) -> None:
    """``AtomicFolder``'s default policy for a ``target`` that exists: replace it only if it is an empty folder."""
    if not folder.is_dir() or any(folder.iterdir()):
        from agentclone.errors import UserError

        raise UserError(f"{folder} exists and is not an empty directory; choose another --output")


class AtomicFolder:
    """A hidden temporary folder ``.NAME.XXXX.tmp`` next to ``target`` (with a plain ``mkdir``'s mode): fill
    ``tmp``, then ``commit`` renames it into place and ``abort`` removes it; as a ``with`` block it commits unless
    the block raised. No partial ``target`` is ever seen, and a failure leaves ``target`` as it was.

    An existing ``target`` is passed to ``check``, which raises to refuse it: before anything is written, and
    again just before it is replaced (so nothing put there meanwhile is lost). The default,
    ``refuse_unless_empty``, replaces only an empty folder; ``check=None`` replaces whatever is there."""

    def __init__(self, target: str | Path, check=refuse_unless_empty) -> None:
        self.target = Path(target)
        self.check = check
        self._check()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = mkdtemp_public(prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent)
        self.done = False

    def _check(self) -> None:
        if self.check is not None and self.target.exists():
            self.check(self.target)

    def commit(self) -> None:
        self.done = True
        try:
            self._check()
            self._replace()
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        _fsync_dir(self.target.parent)

    def _replace(self) -> None:
        """Rename ``tmp`` into place; an old ``target`` is moved aside first, and back if the rename fails."""
        target = self.target
        if not target.exists():
            os.replace(self.tmp, target)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / "x")
        try:
            os.replace(self.tmp, target)
        except BaseException:
            os.replace(old / "x", target)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        self.done = True
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.done:
            self.commit()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- Hugging Face datasets / Parquet ---------------------------------------
# Arrow needs one schema per column; free-form dicts (info, env_kwargs,
# selection, timings, task data) are stored as JSON strings. A step's ``expert``
# label has a fixed shape: a struct column (null where a step has none).
_JSON_STEP_FIELDS = ("info", "selection")
_JSON_TRAJ_FIELDS = ("env_kwargs", "timings")


def _to_record(traj: Trajectory) -> dict:
    rec = traj.model_dump(mode="json", by_alias=True)
    for key in _JSON_TRAJ_FIELDS:
        rec[key] = json.dumps(rec[key])
    for step in rec["steps"]:
        for key in _JSON_STEP_FIELDS:
            step[key] = json.dumps(step[key])
    return rec


def _from_record(rec: dict) -> Trajectory:
    rec = dict(rec)
    for key in _JSON_TRAJ_FIELDS:
        rec[key] = json.loads(rec[key])
    steps = []
    for step in rec["steps"]:
        step = dict(step)
        for key in _JSON_STEP_FIELDS:
            step[key] = json.loads(step[key])
        steps.append(step)
    rec["steps"] = steps
    return Trajectory.model_validate(rec)


def to_dataset(trajs: Iterable[Trajectory]):
    """A ``datasets.Dataset`` with one row per trajectory."""
    from datasets import Dataset

    return Dataset.from_list([_to_record(t) for t in trajs])


def from_dataset(dataset) -> list[Trajectory]:
    return [_from_record(row) for row in dataset]


def save_parquet(trajs: Iterable[Trajectory], path: str | Path) -> None:
    """Write a Parquet file atomically: a temporary file of its own in the same folder, fsynced, renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = to_dataset(trajs)
    fd, tmp = mkstemp_public(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.close(fd)
        dataset.to_parquet(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_parquet(path: str | Path) -> list[Trajectory]:
    from datasets import Dataset

    return from_dataset(Dataset.from_parquet(str(path)))


def load_any(path: str | Path) -> list[Trajectory]:
    """Read a .jsonl or .parquet trajectory file."""
    path = Path(path)
    if path.suffix == ".parquet":
        return load_parquet(path)
    return read_trajectories(path)
