"""A forked search or check process dies with its parent, however the parent dies (Linux)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cancel import write_case  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GONE_WITHIN = 5.0   # seconds after the parent's death

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")

# A parent that forks two children through run_beside and then works (sleeps) for ten minutes.
# "sleep": the children sleep too; "large": they return 64 MB, and block on the pipe (unread).
PARENT = """
import os, sys, time
import torch   # imported once here: the forked children share it
from verifier.forked import run_beside

folder, mode = sys.argv[1], sys.argv[2]

def work():
    open(os.path.join(folder, f"child-{os.getpid()}"), "w").close()
    if mode == "large":
        return b"x" * (64 << 20)
    time.sleep(600)

run_beside(lambda: time.sleep(600), [work, work], None)
"""


def state(pid: int) -> str | None:
    """The process's state letter (None: no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for whoever adopted it counts as gone)."""
    return state(pid) not in (None, "Z", "X")


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def wait_for(condition, seconds: float):
    """Poll ``condition()`` until it is truthy (returned) or ``seconds`` pass (its last value)."""
    end = time.monotonic() + seconds
    while True:
        value = condition()
        if value or time.monotonic() >= end:
            return value
        time.sleep(0.05)


def stop(parent: subprocess.Popen, pids: list[int]) -> None:
    """Leave nothing behind, whatever the test saw: kill the processes this test started."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    if parent.poll() is None:
        parent.kill()
        parent.wait(10)


def kill_and_check(parent: subprocess.Popen, children: list[int], sig: int) -> None:
    """Send ``sig`` to the parent; every child must be gone soon after."""
    parent.send_signal(sig)
    parent.wait(10)
    wait_for(lambda: not any(alive(p) for p in children), GONE_WITHIN)
    left = [p for p in children if alive(p)]
    assert not left, f"children {left} outlived their parent (states {[state(p) for p in left]})"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("mode", ["sleep", "large"])
def test_run_beside_children_die_with_their_parent(tmp_path, mode, sig):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), mode], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    children = []
    try:
        wait_for(lambda: len(list(tmp_path.glob("child-*"))) == 2, 60)
        children = [int(p.name[len("child-"):]) for p in tmp_path.glob("child-*")]
        assert len(children) == 2, "the children did not start"
        if mode == "large":   # let them reach the blocking write
            wait_for(lambda: all("pipe" in Path(f"/proc/{p}/wchan").read_text() for p in children), 5)
        kill_and_check(parent, children, sig)
    finally:
        stop(parent, children)


@pytest.fixture(scope="module")
def long_search(tmp_path_factory):
    """An input-split property open for minutes (see test_cancel)."""
    return write_case(tmp_path_factory.mktemp("orphans"), 9, [12, 64, 64, 2], 0.5)


def _forks_here() -> bool:
    """Whether verify forks search workers on this machine (CPU run, two cores or more)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores >= 2 and not torch.cuda.is_available()


@pytest.mark.skipif(not _forks_here(), reason="input splitting forks workers only on CPU with 2+ cores")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_cli_search_worker_dies_with_the_cli(long_search, sig):
    """``verify`` on the command line forks its input-split worker after 2 s; killing the command
    kills the worker too."""
    cli = subprocess.Popen([sys.executable, "-m", "verifier.cli", "verify", *long_search, "--timeout", "120"],
                           cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = []
    try:
        children = wait_for(lambda: children_of(cli.pid) or None, 60) or []
        assert children, "the command forked no search worker within a minute"
        kill_and_check(cli, children, sig)
    finally:
        stop(cli, children)
