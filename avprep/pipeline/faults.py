"""Faults of the machine, not of a video: an output folder that cannot be written (a full disk, a quota, a
read-only or vanished folder, a file-size limit), and a second run on a folder another run is writing. Either
stops the run at once with one line; nothing is recorded against the videos, and a plain rerun resumes."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

PROBE_BYTES = 1 << 20


class EnvironmentFault(OSError):
    """The output folder cannot take what the run writes: the run stops, the videos are not blamed."""


class FolderBusy(RuntimeError):
    """Another run holds the folder's lock."""


def output_fault(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` cannot take a run's writes (writing, syncing and removing a 1 MiB file there fails), or
    None when it can: asked after a video fails, so a full disk is not mistaken for a bad video."""
    probe = Path(folder) / f".probe-{os.getpid()}-{time.monotonic_ns()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(bytes(PROBE_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        with contextlib.suppress(OSError):
            probe.unlink()
        return f"{error.strerror or error} writing to {folder}"
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


@contextlib.contextmanager
def holding(folder: str | os.PathLike, what: str):
    """The folder's lock for one run (``what``: "extract", "shard"): a second run on it, from another terminal or
    another machine on shared storage (where the file system honours locks), refuses with one line naming the
    first, instead of both redoing the same work and racing on its files."""
    path = Path(folder) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except json.JSONDecodeError:
                holder = {}
            raise FolderBusy(f"{folder} is being written by another {holder.get('what', 'run')} (pid "
                             f"{holder.get('pid', '?')} on {holder.get('host', '?')} since "
                             f"{holder.get('since', '?')}): wait for it to finish, then run again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        try:
            yield
        finally:  # an empty lock file says no run holds it (a killed run's note is overwritten by the next)
            handle.seek(0)
            handle.truncate()
    finally:
        handle.close()  # releases the lock
