"""Process trees, for tests that kill what a node failure kills.

torchrun starts each rank in a session of its own, so killing the agent's process group leaves the
ranks running. These helpers find every descendant through /proc and kill them all at once.
"""

from __future__ import annotations

import os
import signal
import time


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    # the command name may hold spaces and parentheses: the fields start after the last ')'
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return parents


def descendants(pid: int) -> set[int]:
    """Every living process below `pid` (not `pid` itself)."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, frontier = set(), [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def alive(pids) -> set[int]:
    """Those of `pids` that still run (zombies count as gone)."""
    living = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    living.add(pid)
        except OSError:
            pass
    return living


def freeze_tree(pid: int) -> set[int]:
    """SIGSTOP `pid` and all its descendants, top down until none is left running (so none can start another
    or notice). Returns the pids frozen."""
    frozen: set[int] = set()
    todo = {pid}
    while todo:
        for p in todo:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        frozen |= todo
        todo = set().union(*(descendants(p) for p in frozen)) - frozen
    return frozen


def signal_all(pids, signum: int) -> None:
    for p in pids:
        try:
            os.kill(p, signum)
        except ProcessLookupError:
            pass


def kill_tree(pid: int) -> set[int]:
    """Freeze `pid` and all its descendants, then SIGKILL them all at once, as a node failure would. Returns the
    pids killed."""
    frozen = freeze_tree(pid)
    signal_all(frozen, signal.SIGKILL)
    return frozen


def wait_gone(pids, timeout: float) -> set[int]:
    """Wait up to `timeout` s for `pids` to end; the ones still running."""
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)
