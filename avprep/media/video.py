"""Decode video frames at a constant rate, in bounded chunks, through ffmpeg-python."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from fractions import Fraction
from typing import Iterator

import ffmpeg
import numpy as np

from avprep.media.ffmpeg import classify_stderr, ffmpeg_exe, input_url


@dataclasses.dataclass
class FrameChunk:
    """``frames[i]`` is output frame ``start + i``, shown at ``(start + i) / fps`` seconds from the file's time zero."""

    start: int
    frames: np.ndarray  # (n, height, width, 3) uint8 RGB
    fps: float

    @property
    def times(self) -> np.ndarray:
        return (self.start + np.arange(len(self.frames))) / self.fps


def rate_fraction(fps: float) -> Fraction:
    """An exact rational rate for ffmpeg: 29.97002997 -> 30000/1001, 25.0 -> 25."""
    return Fraction(fps).limit_denominator(1001)


def decode_frames(path: str | os.PathLike, *, width: int, height: int, fps: float,
                  max_chunk_bytes: int = 64 << 20, threads: int = 0) -> Iterator[FrameChunk]:
    """Yield constant-rate RGB frames of the first video stream, at most ``max_chunk_bytes`` of pixels at a time.

    ffmpeg's ``fps`` filter resamples any input (including variable-rate) to exact times k/fps counted from the
    file's time zero, and its default autorotation applies rotation metadata, so ``width``/``height`` are the
    displayed (rotated) size from the probe. Memory stays bounded whatever the video's length.
    """
    frame_bytes = width * height * 3
    chunk_frames = max(1, max_chunk_bytes // frame_bytes)
    rate = rate_fraction(fps)
    args = (
        ffmpeg.input(input_url(path), threads=threads)
        .video.filter("fps", fps=str(rate), start_time=0, round="near")
        .output("pipe:", format="rawvideo", pix_fmt="rgb24")
        .global_args("-nostdin", "-v", "error")
        .compile(cmd=ffmpeg_exe())
    )
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr)
        start = 0
        try:
            while True:
                buffer = process.stdout.read(frame_bytes * chunk_frames)
                n = len(buffer) // frame_bytes
                if n:
                    frames = np.frombuffer(buffer, np.uint8, count=n * frame_bytes).reshape(n, height, width, 3)
                    yield FrameChunk(start, frames, float(rate))
                    start += n
                if len(buffer) < frame_bytes * chunk_frames:
                    break
        finally:
            process.stdout.close()
            if process.poll() is None:
                process.kill()  # the consumer stopped early
            process.wait()
        if process.returncode != 0 and start == 0:
            stderr.seek(0)
            raise classify_stderr(stderr.read().decode(errors="replace"))
