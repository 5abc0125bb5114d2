"""The allocator setting the reading stage makes (``costinfer/reading/allocator.py``): on glibc, memory a process
frees is used again, not handed back and faulted in anew. Counted in page faults, in fresh processes: not a
timing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from costinfer.reading.allocator import _is_glibc

# Build a block's worth of rows (30,000 objects of 1 KB, past pymalloc's 512 bytes, so from malloc's heap) and free
# them, ten times; print the minor page faults that took
_CHURN = """
import resource, sys
if sys.argv[1] == "keep":
    from costinfer.reading.allocator import keep_freed_memory
    assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    block = [bytes(1000) for _ in range(30_000)]
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not (sys.platform.startswith("linux") and _is_glibc()), reason="mallopt is glibc's")
def test_memory_freed_by_a_block_is_used_again_by_the_next() -> None:
    def faults(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True)
        return int(done.stdout)

    pages = 10 * 30_000 * 1000 // 4096  # every block's pages
    assert faults("default") >= pages * 0.8  # each block faulted its pages in anew
    assert faults("keep") <= pages * 0.2  # the first block's pages, used again
