"""Encoding media with the ffmpeg binary: run it on raw frames, and write H.264/AAC MP4s with sound.

Used by the test and demo media generators and by ``avmodels sample`` / ``eval`` for talking videos."""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import uuid
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from avprep.media.ffmpeg import ffmpeg_exe, input_url


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


def write_video(path: Path, frames, audio: np.ndarray, sample_rate: int, size, rate: Fraction | float,
                crf: int = 18) -> None:
    """Stream RGB frames to ffmpeg's stdin, mux them with ``audio`` ((samples,) or (samples, channels)) as
    H.264/AAC MP4, and move the file into place atomically. Tests use it to compose scenes from decoded clips."""
    width, height = size
    # A hidden name next to the target, so os.replace is atomic; ffmpeg creates it with the usual permissions.
    partial = str(path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            wav = os.path.join(tmp, "audio.wav")
            sf.write(wav, audio, sample_rate, subtype="PCM_16")
            args = [
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(rate), "-i", "pipe:0",
                "-i", input_url(wav),
                "-map", "0:v:0", "-map", "1:a:0",
                "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
                "-c:a", "aac", "-b:a", "128k",
                "-movflags", "+faststart", "-f", "mp4", input_url(partial),
            ]  # fmt: skip
            run_ffmpeg(args, frames)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
