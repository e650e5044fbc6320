"""Generated TextWorld games: which games exist, and the on-disk cache that compiles each once.

A game is named by ``(family, settings, seed)``. TextWorld's own generator
(the ``tw-make`` challenges) builds it and its bundled Inform 7 compiles it to a
``.z8`` file, a few seconds a game; after that every episode reuses the file.

Cache layout, under ``agentclone.models.cache_dir() / "textworld"`` (or ``games_dir``)::

    textworld-1.7.0/cooking/cook0-cut0-drop0-go1-open0-recipe1-take1/seed-7/
        game.z8      the compiled game (what the interpreter plays)
        game.json    TextWorld's game description (state tracking, walkthrough, policy)
        meta.json    family, settings, seed, walkthrough, objective, seconds to build

A game directory appears whole or not at all: it is generated into a temporary
sibling directory and renamed into place, so a killed run or two runs racing for
the same game never leave a half-written one. The same seed gives the same game
up to the order of some internal sets (TextWorld iterates Python sets), so the
cached file, not the seed alone, is what pins an exact game.
"""

from __future__ import annotations

import importlib.metadata
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable


@lru_cache(maxsize=None)
def textworld_version() -> str:
    """The installed TextWorld's version: part of every cache path, since games differ between versions."""
    try:
        return importlib.metadata.version("textworld")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            "the TextWorld environments need the package textworld: pip install textworld==1.7.0"
        ) from None


#: agentclone family name -> TextWorld challenge name (``tw-make <challenge>``)
CHALLENGES = {
    "cooking": "tw-cooking",
    "coin": "tw-coin_collector",
    "treasure": "tw-treasure_hunter",
}

#: generation processes by default: one per core, at most 8 (each runs a whole TextWorld generator)
DEFAULT_WORKERS = min(8, os.cpu_count() or 1)

_COMPILED = 0  # games compiled by this process (directly or through its workers)


def compiled_count() -> int:
    """How many games this process has compiled so far (cache hits do not count)."""
    return _COMPILED


@dataclass(frozen=True, order=True)
class GameSpec:
    """One game: a family, its difficulty settings and a seed."""

    family: str
    settings: tuple[tuple[str, Any], ...]  # sorted (name, value) pairs; hashable
    seed: int

    @classmethod
    def make(cls, family: str, settings: dict[str, Any], seed: int) -> GameSpec:
        if family not in CHALLENGES:
            raise ValueError(f"unknown TextWorld game family {family!r}; known: {', '.join(sorted(CHALLENGES))}")
        return cls(family, tuple(sorted(settings.items())), int(seed))

    @property
    def settings_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    @property
    def settings_key(self) -> str:
        """``cook0-cut0-...-take1`` (sorted by name): readable, and unique for int/bool settings."""
        return settings_key(self.settings_dict)

    def directory(self, root: Path) -> Path:
        return Path(root) / f"textworld-{textworld_version()}" / self.family / self.settings_key / f"seed-{self.seed}"

    def __str__(self) -> str:
        return f"{self.family}/{self.settings_key}/seed-{self.seed}"


def settings_key(settings: dict[str, Any]) -> str:
    parts = []
    for name, value in settings.items():
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int):
            raise TypeError(f"game setting {name} must be an int or a bool, got {value!r}")
        parts.append(f"{name}{value}")
    return "-".join(parts)


def default_root() -> Path:
    from agentclone.models import cache_dir

    return cache_dir() / "textworld"


def game_files(spec: GameSpec, root: Path) -> tuple[Path, Path]:
    """(game.z8, meta.json) of a cached game."""
    folder = spec.directory(root)
    return folder / "game.z8", folder / "meta.json"


def is_cached(spec: GameSpec, root: Path) -> bool:
    folder = spec.directory(root)
    return all((folder / name).is_file() for name in ("game.z8", "game.json", "meta.json"))


def _challenge_settings(family: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings dict TextWorld's ``make`` reads (what ``tw-make`` builds from its flags)."""
    if family == "cooking":
        # recipe_seed 0: the recipe follows the game seed; split None: foods from every split
        return {**settings, "recipe_seed": 0, "split": None}
    return dict(settings)


def generate_game(spec: GameSpec, root: Path) -> Path:
    """Build and compile one game into the cache; return its ``game.z8``. Safe to run concurrently."""
    import textworld
    import textworld.challenges
    from textworld.generator import compile_game

    target = spec.directory(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    t0 = time.perf_counter()
    try:
        options = textworld.GameOptions()
        options.seeds = spec.seed
        options.path = str(tmp / "game.z8")
        options.file_ext = ".z8"
        options.force_recompile = True
        make = textworld.challenges.CHALLENGES[CHALLENGES[spec.family]][1]
        game = make(settings=_challenge_settings(spec.family, spec.settings_dict), options=options)
        compile_game(game, options)
        (tmp / "game.ni").unlink(missing_ok=True)  # the Inform 7 source; not needed to play
        meta = {
            "family": spec.family,
            "challenge": CHALLENGES[spec.family],
            "settings": spec.settings_dict,
            "seed": spec.seed,
            "textworld": textworld_version(),
            "objective": game.objective,
            "walkthrough": list(game.metadata.get("walkthrough") or []),
            "max_score": game.max_score,
            "build_s": round(time.perf_counter() - t0, 2),
        }
        with open(tmp / "meta.json", "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.rename(tmp, target)  # atomic; fails when another process already put the game there
        except OSError:
            if not is_cached(spec, root):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target / "game.z8"


def _generate_in_worker(spec: GameSpec, root: str) -> str:
    return str(generate_game(spec, Path(root)))


def ensure_game(spec: GameSpec, root: Path) -> Path:
    """The cached ``game.z8`` of ``spec``, compiling it here and now if it is missing."""
    global _COMPILED
    path, _ = game_files(spec, root)
    if is_cached(spec, root):
        return path
    generate_game(spec, root)
    _COMPILED += 1
    return path


@dataclass
class PrepareReport:
    """What ``ensure_games`` did: games compiled, games found in the cache, games that failed."""

    compiled: list[GameSpec] = field(default_factory=list)
    cached: int = 0
    failed: dict[GameSpec, str] = field(default_factory=dict)
    wall_s: float = 0.0


def ensure_games(
    specs: Iterable[GameSpec], root: Path, workers: int | None = None, progress: bool = True
) -> PrepareReport:
    """Compile every game of ``specs`` that is not cached yet, in parallel processes.

    A game that fails to generate is reported in ``failed`` (not raised), so one bad
    seed does not stop the others; playing it later raises the error again.
    """
    global _COMPILED
    t0 = time.perf_counter()
    unique = sorted(set(specs))
    todo = [s for s in unique if not is_cached(s, root)]
    report = PrepareReport(cached=len(unique) - len(todo))
    if not todo:
        report.wall_s = time.perf_counter() - t0
        return report
    workers = max(1, min(workers or DEFAULT_WORKERS, len(todo)))
    description = f"compiling {len(todo)} TextWorld games"
    if workers == 1:
        bar = _GenerationProgress(len(todo), description, enabled=progress)
        try:
            for spec in todo:
                try:
                    generate_game(spec, root)
                    report.compiled.append(spec)
                    _COMPILED += 1
                except Exception as exc:
                    report.failed[spec] = f"{type(exc).__name__}: {exc}"
                bar.advance()
        finally:
            bar.close()
    else:
        # fork where there is one: workers start at once and the caller's script needs no
        # `if __name__ == "__main__"` guard (spawn would re-run it). The workers only run
        # TextWorld's generator, never the parent's model or threads; start them before the
        # progress bar's thread exists.
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(_generate_in_worker, spec, str(root)): spec for spec in todo}
            bar = _GenerationProgress(len(todo), description, enabled=progress)
            try:
                for future in as_completed(futures):
                    spec = futures[future]
                    try:
                        future.result()
                        report.compiled.append(spec)
                        _COMPILED += 1
                    except Exception as exc:
                        report.failed[spec] = f"{type(exc).__name__}: {exc}"
                    bar.advance()
            finally:
                bar.close()
    report.wall_s = time.perf_counter() - t0
    return report


class _GenerationProgress:
    """A rich progress bar on stderr (stdout may carry JSON)."""

    def __init__(self, total: int, description: str, enabled: bool = True) -> None:
        self.progress = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),
        )
        self.task = self.progress.add_task(description, total=total)
        self.progress.start()

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
