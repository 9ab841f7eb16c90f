"""The Sampler's heap scope: freed blocks stay mapped inside it and go back after."""

from __future__ import annotations

import pytest
import torch

from ucoder.heap import _glibc, reuse_freed_memory

MIB = 2**20
pytestmark = pytest.mark.skipif(_glibc() is None, reason="needs glibc's malloc")


def _rss() -> int:
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def _touch_and_free(mib: int) -> None:
    block = torch.ones(mib * MIB // 4)  # written, so its pages are resident
    del block


def test_freed_blocks_stay_resident_inside_and_are_returned_on_exit():
    # Outside the scope glibc maps such a block and unmaps it at free, unless its heap
    # already has a free chunk that large (it depends on what the process did before).
    with reuse_freed_memory():
        _glibc().malloc_trim(0)  # free pages left by earlier tests are not resident
        base = _rss()
        _touch_and_free(96)
        assert _rss() - base > 64 * MIB  # kept for the next step's allocation
        for _ in range(6):  # reused: aligned blocks may take a second one, never more
            _touch_and_free(96)
        assert _rss() - base < 3 * 96 * MIB
    assert _rss() - base < 32 * MIB

