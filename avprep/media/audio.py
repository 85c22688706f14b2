"""Decode the first audio stream to 16 kHz mono float32 on the video's timeline, and store it losslessly."""
from __future__ import annotations

import os
import subprocess

import ffmpeg
import numpy as np
import soundfile

from avprep.media.ffmpeg import MediaError, classify_stderr, ffmpeg_exe, input_url

SAMPLE_RATE = 16000


def decode_audio(path: str | os.PathLike, channels: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples; sample ``n`` plays at ``n / sample_rate`` seconds from the file's time zero.

    ``aresample`` with ``first_pts=0`` pads a late-starting audio stream with silence (and fills gaps), so the
    samples line up with video frames decoded from the same time zero. Channels are averaged (ffmpeg's own
    downmix scales by 1/sqrt(2) and can exceed full scale for centred voices).
    """
    args = (
        ffmpeg.input(input_url(path))
        .audio.filter("aresample", sample_rate, **{"async": 1, "first_pts": 0})
        .output("pipe:", format="f32le", acodec="pcm_f32le")
        .global_args("-nostdin", "-v", "error")
        .compile(cmd=ffmpeg_exe())
    )
    result = subprocess.run(args, capture_output=True)
    if result.returncode != 0:
        raise classify_stderr(result.stderr.decode(errors="replace"))
    samples = np.frombuffer(result.stdout, np.float32)
    if samples.size % channels:
        raise MediaError("decode error",
                         f"audio decoded to {samples.size} values, not a multiple of {channels} channels")
    return samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)


def write_flac(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Lossless 24-bit FLAC (float32 speech loses nothing audible at 24 bits; FLAC has no float mode)."""
    soundfile.write(os.fspath(path), np.clip(samples, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_24")


def read_flac(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    samples, sample_rate = soundfile.read(os.fspath(path), dtype="float32")
    return samples, sample_rate
