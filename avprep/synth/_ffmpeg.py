"""Running the ffmpeg binary for the generators, with its complaint in the exception when it fails."""
from __future__ import annotations

import contextlib
import subprocess
import tempfile

from avprep.media.ffmpeg import ffmpeg_exe


def run_ffmpeg(args: list[str], frames=None) -> None:
    """Run ``ffmpeg -y <args>``, feeding ``frames`` (arrays, as raw bytes) to its stdin when given.

    Raises RuntimeError with the tail of ffmpeg's stderr when it exits with an error.
    """
    command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args]
    # stderr goes to a file rather than a pipe so a chatty ffmpeg can never block on it while we write.
    with tempfile.TemporaryFile() as stderr:
        stdin = subprocess.DEVNULL if frames is None else subprocess.PIPE
        proc = subprocess.Popen(command, stdin=stdin, stderr=stderr)
        try:
            if frames is not None:
                _feed(proc.stdin, frames)
        finally:
            returncode = proc.wait()
        if returncode != 0:
            stderr.seek(0)
            tail = stderr.read().decode("utf-8", "replace")[-2000:]
            raise RuntimeError(f"ffmpeg failed with exit code {returncode}: {tail.strip()}")


def _feed(pipe, frames) -> None:
    """Write the frames and close the pipe, even if making a frame fails, so ffmpeg always sees the end."""
    # A broken pipe means ffmpeg stopped early; its exit code and stderr tell why, so it is not raised here.
    with contextlib.suppress(BrokenPipeError):
        try:
            for frame in frames:
                pipe.write(frame.tobytes())
        finally:
            with contextlib.suppress(BrokenPipeError):
                pipe.close()
