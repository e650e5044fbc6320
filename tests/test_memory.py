"""Memory a stage freed goes back to the system before the next stage of the same process starts."""

import ctypes

import pytest

from agentclone.memory import _malloc_trim, give_back, resident_bytes
from agentclone.stages import StageRunner

pytestmark = pytest.mark.skipif(_malloc_trim() is None or resident_bytes() is None,
                                reason="needs glibc's malloc_trim and /proc (Linux)")

MB = 1 << 20


def heap_left_resident(total_mb: int = 300):
    """What training leaves behind: many small blocks written to, then all freed but one in 16, so the freed
    pages lie between blocks still in use, the heap cannot shrink, and glibc keeps them resident for reuse."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(4096) for _ in range(total_mb * MB // 4096)]
    for b in blocks:
        ctypes.memset(b, 1, 4096)
    kept = set(blocks[::16])  # about 19 MB still in use
    for b in blocks:
        if b not in kept:
            libc.free(b)
    return lambda: [libc.free(b) for b in kept]


def test_freed_heap_stays_resident_without_give_back():
    """The premise, so the next test shows something: freeing alone does not lower resident memory."""
    before = resident_bytes()
    unpin = heap_left_resident()
    try:
        assert resident_bytes() - before > 200 * MB
    finally:
        unpin()
        give_back()


def test_the_stage_runner_gives_a_stages_freed_memory_back(tmp_path, capsys):
    before = resident_bytes()
    unpins = []
    runner = StageRunner(tmp_path)
    runner.run("train", "train", tmp_path / "out.txt", {"x": 1},
               lambda: (unpins.append(heap_left_resident()), (tmp_path / "out.txt").write_text("done")))
    try:
        assert resident_bytes() - before < 100 * MB  # about 300 MB were resident when the stage returned
        assert "GB of memory given back" in capsys.readouterr().err
        assert runner.outcomes == {"train": "ran"}
    finally:
        unpins[0]()
