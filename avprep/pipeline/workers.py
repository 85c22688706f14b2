"""Worker processes that extract one video at a time, watched so that a crash or a hang costs only that video.

A pool built on joblib/loky or ``concurrent.futures`` is torn down when one of its workers dies: every video in
flight fails with it and none is named as the cause. Here each worker has a pipe of its own and the parent knows
which video each one holds. A worker that dies (a signal, the kernel's out-of-memory killer, a segfault in native
code) or that holds its video past the video's deadline is killed together with its ffmpeg children (it leads
its own process group) and replaced; only its video is reported lost.

A worker is ``python -m avprep.pipeline.workers`` with one end of a socket pair, not a multiprocessing child:
spawned multiprocessing children import the parent's ``__main__`` again, which re-runs a user's script that
calls ``run_extract`` without an ``if __name__ == "__main__"`` guard.

Protocol on a worker's socket: the parent sends the work function, then a task at a time (``None``: stop); the
worker answers ``("started", duration_s)`` once it knows how long the video is (the deadline grows with it) and
then ``("done", result)``. A worker that dies closes its end: the parent reads EOF and asks for its exit status.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Callable, Iterable, Iterator


@dataclasses.dataclass(frozen=True)
class Lost:
    """A task whose worker did not come back with a result."""

    kind: str  # "worker crashed" or "timeout"
    message: str


def run_watched(work: Callable, tasks: Iterable, jobs: int,
                time_limit: Callable[[float | None], float]) -> Iterator[tuple[object, object]]:
    """``(task, result)`` in completion order, ``result`` being ``work(task, started=...)`` or a ``Lost``.

    ``work`` runs in a worker process and calls ``started(duration_s)`` when it knows the task's size;
    ``time_limit(duration_s or None)`` gives the seconds a task may take from when its worker received it.
    """
    pending = list(tasks)
    pending.reverse()  # pop() from the end keeps the given order
    workers: list[_Worker] = []
    try:
        while pending or any(w.task is not None for w in workers):
            for worker in [w for w in workers if w.task is None and w.process.poll() is not None]:
                worker.stop()  # crashed or killed: a fresh worker takes its place
                workers.remove(worker)
            while pending and len(workers) < jobs:
                workers.append(_Worker(work))
            for worker in workers:
                if worker.task is None and pending:
                    worker.give(pending.pop())
            busy = [w for w in workers if w.task is not None]
            now = time.monotonic()
            timeout = max(0.0, min(w.deadline(time_limit) for w in busy) - now)
            ready = wait([w.connection for w in busy], timeout)
            for worker in busy:
                outcome = worker.poll(ready, time_limit)
                if outcome is not None:
                    yield outcome
    finally:
        for worker in workers:
            worker.stop()


class _Worker:
    def __init__(self, work: Callable):
        ours, theirs = socket.socketpair()
        # A session of its own: the worker leads a process group that takes its ffmpeg children with it when killed.
        self.process = subprocess.Popen([sys.executable, "-m", "avprep.pipeline.workers", str(theirs.fileno()),
                                         str(os.getpid())], pass_fds=[theirs.fileno()], start_new_session=True)
        theirs.close()
        self.connection = Connection(ours.detach())
        self.connection.send(work)
        self.task = None
        self.given_at = 0.0
        self.duration_s: float | None = None

    def give(self, task) -> None:
        self.connection.send(task)
        self.task, self.given_at, self.duration_s = task, time.monotonic(), None

    def deadline(self, time_limit: Callable[[float | None], float]) -> float:
        return self.given_at + time_limit(self.duration_s)

    def poll(self, ready: list, time_limit: Callable[[float | None], float]) -> tuple[object, object] | None:
        """The task's outcome if it has one now: its result, or a Lost when the worker died or ran out of time."""
        while self.connection in ready or self.connection.poll():
            try:
                kind, value = self.connection.recv()
            except (EOFError, OSError):
                break  # the worker died mid-task: its exit status says how, below
            if kind == "started":
                self.duration_s = value
                ready = []
                continue
            return self._finish(value)
        if self.connection in ready or self.process.poll() is not None:  # readable with nothing to read: EOF
            return self._finish(Lost("worker crashed", f"the worker process {_exit_reason(self.process.wait())} "
                                                       "while extracting this video"))
        limit = time_limit(self.duration_s)
        if time.monotonic() - self.given_at > limit:
            self.kill()
            return self._finish(Lost("timeout", f"still running after {limit:.0f} s (--video-timeout); "
                                                "its worker was killed and replaced"))
        return None

    def _finish(self, result) -> tuple[object, object]:
        task, self.task = self.task, None
        return task, result

    def kill(self) -> None:
        """The worker and everything it started (ffmpeg), at once."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None and self.task is None:
            try:
                self.connection.send(None)
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            self.kill()
        self.connection.close()


def _serve(descriptor: int, parent: int) -> None:
    """A worker's life: die with the parent, take the work function, run tasks until told to stop."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the workers
    connection = Connection(descriptor)
    work = connection.recv()
    while (task := connection.recv()) is not None:
        result = work(task, started=lambda duration_s: connection.send(("started", duration_s)))
        connection.send(("done", result))


def _die_with(parent: int) -> None:
    """A worker whose parent is killed (kill -9, a crash) must not go on writing into the prep folder beside the
    run that resumes it: on Linux the kernel kills it with its parent; elsewhere a thread watches."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (the system may have run out of memory)" if -exitcode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {exitcode}"


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
