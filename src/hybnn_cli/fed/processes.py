"""The processes of a loopback federation, and how they all end, however hybnn ends.

Flower starts processes of its own: the SuperLink starts a SuperExec in a session of its own,
which starts the ServerApp; each SuperNode starts a SuperExec, which starts a fresh ClientApp for
every message. Stopping the process groups hybnn started misses the SuperLink's SuperExec and
ServerApp, and once a parent has exited its children belong to init, no longer anyone's
descendants. The handle on all of them is the *session*: a process keeps its session id for
life. A federation is every live process in a session it has been seen to use, plus their
descendants (`members`; the set of sessions grows as descendants in new sessions are seen).

- `Processes.stop()` (normal end, error, Ctrl-C, SIGTERM): SIGTERM to every member, a grace of
  2 s, then `kill_all`. The grace is short on purpose: the whole federation ends, so nothing is
  gained by a SuperNode deregistering or a SuperLink closing its connections, and Flower's own
  graceful exits took 9 s on a loaded 2-core machine (the server's half-written outputs are
  `atomic_path` temporary files, which the Federation removes).
- `kill_all`: SIGSTOP every member (a stopped process can neither start another nor exit and
  orphan its children), look again until nothing new appears, SIGKILL them all; until none is left.
- SIGKILL of hybnn (no `finally` runs): a watchdog process (`python -m hybnn_cli.fed.processes`),
  in a session of its own, reads session ids from a pipe whose write end only hybnn holds. When
  the pipe closes, because hybnn exited in any way, it runs `kill_all` on them. (A parent-death
  signal would reach only hybnn's own children, and `preexec_fn` is unsafe in a threaded process.)
- `SignalGuard`: while a federation is up, SIGINT and SIGTERM raise KeyboardInterrupt and
  `errors.Terminated` in the main thread, also when SIGINT was inherited as ignored (a shell
  starts background jobs so). Inside `hold()` (starting a process, stopping them all) a signal
  is held and raised when the hold ends; after the first one, signals are ignored, so a second
  Ctrl-C never cuts the teardown short.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hybnn_cli.errors import Terminated


# ── the process table ────────────────────────────────────────────────────────────────────────
def _table() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, session id) of every live process, zombies left out (Linux /proc)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] not in ("Z", "X"):
                table[int(stat.parent.name)] = (int(fields[1]), int(fields[3]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def members(sessions: set[int]) -> set[int]:
    """Every live process in one of `sessions` or descended from one that is; adds the sessions
    of the descendants found to `sessions`. Never this process or anything in its session."""
    table = _table()
    own = {os.getpid(), os.getsid(0)}
    sessions.difference_update(own | {0, 1})
    children: dict[int, list[int]] = {}
    by_session: dict[int, list[int]] = {}
    for pid, (ppid, sid) in table.items():
        children.setdefault(ppid, []).append(pid)
        by_session.setdefault(sid, []).append(pid)
    found: set[int] = set()
    todo = [pid for sid in sessions for pid in by_session.get(sid, [])]
    while todo:
        pid = todo.pop()
        if pid in found or pid in own or table[pid][1] in own:
            continue
        found.add(pid)
        sid = table[pid][1]
        if sid not in sessions and sid > 1:
            sessions.add(sid)
            todo += by_session.get(sid, [])
        todo += children.get(pid, [])
    return found


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_all(sessions: set[int], timeout: float = 10.0) -> None:
    """SIGKILL every member of `sessions`, freezing them first so that none escapes."""
    deadline = time.monotonic() + timeout
    while (found := members(sessions)) and time.monotonic() < deadline:
        while True:
            for pid in found:
                _kill(pid, signal.SIGSTOP)
            more = members(sessions) - found
            if not more:
                break
            found |= more
        for pid in found:
            _kill(pid, signal.SIGKILL)
        time.sleep(0.05)


# ── signals ──────────────────────────────────────────────────────────────────────────────────
class SignalGuard:
    """SIGINT → KeyboardInterrupt, SIGTERM → Terminated while installed (main thread only);
    held inside `hold()`; only the first signal counts."""

    EXCEPTIONS = {signal.SIGINT: KeyboardInterrupt, signal.SIGTERM: Terminated}

    def __init__(self):
        self.previous: dict[int, object] = {}
        self.depth = 0
        self.pending: int | None = None
        self.fired = False

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread() and not self.previous:
            for sig in self.EXCEPTIONS:
                self.previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def _on_signal(self, signum, frame) -> None:
        if self.fired or self.pending:
            return
        if self.depth:
            self.pending = signum
            return
        self.fired = True
        raise self.EXCEPTIONS[signum]()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending and not self.fired:
                self.fired = True
                raise self.EXCEPTIONS[self.pending]()


# ── the processes ────────────────────────────────────────────────────────────────────────────
class Processes:
    """Processes started in sessions of their own, with everything they start in turn.

    As a context manager: SIGINT/SIGTERM are exceptions inside (`SignalGuard`) and `stop()` runs
    on exit. `stop()` alone works too (tests use it without the guard).
    """

    def __init__(self, env: dict, log_dir: Path):
        self.env, self.log_dir = env, log_dir
        self.procs: list[subprocess.Popen] = []
        self.sessions: set[int] = set()
        self.guard = SignalGuard()
        self._watchdog: subprocess.Popen | None = None

    def __enter__(self) -> Processes:
        self.guard.install()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.guard.uninstall()

    def _popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        """Start a process in a new session, known to the watchdog before anything else runs."""
        with self.guard.hold():
            if self._watchdog is None:
                self._watchdog = subprocess.Popen(
                    [sys.executable, "-m", "hybnn_cli.fed.processes"], env=self.env,
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True)
            proc = subprocess.Popen(args, env=self.env, start_new_session=True, **kwargs)
            self._learn({proc.pid})
        return proc

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        """A long-running process with its output in `<log_dir>/<name>.log`; `stop()` ends it."""
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = self._popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        """A short command (like `subprocess.run`, output captured), covered by the watchdog."""
        proc = self._popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except BaseException:
                proc.kill()
                raise
        if not any(sid == proc.pid for _, sid in _table().values()):
            self.sessions.discard(proc.pid)  # done with: its number may be reused one day
            self._tell([f"-{proc.pid}"])
        return subprocess.CompletedProcess(args, proc.returncode, out, err)

    def track(self) -> None:
        """Note the sessions of processes Flower started (call now and then while running)."""
        self._learn(set())

    def _learn(self, sessions: set[int]) -> None:
        before = set(self.sessions)
        self.sessions |= sessions
        members(self.sessions)
        self._tell([str(s) for s in self.sessions - before])

    def _tell(self, lines: list[str]) -> None:
        if lines and self._watchdog is not None:
            try:
                self._watchdog.stdin.write("".join(f"{line}\n" for line in lines).encode())
                self._watchdog.stdin.flush()
            except OSError:  # the watchdog is gone; stop() still covers everything
                pass

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM to every process of the federation, SIGKILL to what is left after `grace`."""
        with self.guard.hold():
            self.track()
            for pid in members(self.sessions):
                _kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                for proc in self.procs:
                    proc.poll()  # reap our own children as they exit
                if not members(self.sessions):
                    break
                time.sleep(0.1)
            kill_all(self.sessions)
            for proc in self.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            self.procs.clear()
            if self._watchdog is not None:  # nothing left for it; it exits on end of file
                with contextlib.suppress(OSError):
                    self._watchdog.stdin.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._watchdog.wait(timeout=5)
                self._watchdog = None


def _watch() -> None:
    """The watchdog: session ids on stdin, one per line (`-id`: forget it); at end of file, kill
    every process of the sessions left."""
    sessions: set[int] = set()
    for line in sys.stdin.buffer:
        with contextlib.suppress(ValueError):
            sid = int(line)
            if sid < 0:
                sessions.discard(-sid)
            else:
                sessions.add(sid)
    kill_all(sessions)


if __name__ == "__main__":
    _watch()
