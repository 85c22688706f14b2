"""Decode throughput of avprep's media layer on generated talking-head video, per core.

    python benchmarks/decode_throughput.py [--seconds 20] [--out benchmarks/results/decode.md]

The process (and the ffmpeg it starts) is pinned to one CPU. For 360p and 720p H.264/AAC clips it times the
probe, the chunked constant-rate frame decode into numpy, the audio decode to 16 kHz, and a whole single-video
extract without face analysis. Reports frames/s per core and the multiple of real time, as a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _bench import best_of, publish

from avprep.media.audio import decode_audio
from avprep.media.probe import probe
from avprep.media.video import decode_frames
from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import RunOptions, extract_video
from avprep.synth.talking_head import make_talking_head

SIZES = {"360p": (640, 360), "720p": (1280, 720)}


def measure(clip: Path, scratch: Path, repeats: int) -> dict:
    info = probe(clip)
    n_frames = round(info.n_packets)
    seconds = n_frames / info.fps

    def decode():
        for _ in decode_frames(clip, width=info.width, height=info.height, fps=info.fps, threads=1):
            pass

    source = discover([clip])[0]
    times = {
        "probe": best_of(repeats, lambda: probe(clip)),
        "frames": best_of(repeats, decode),
        "audio": best_of(repeats, lambda: decode_audio(clip, info.audio_channels)),
        "extract": best_of(repeats, lambda: extract_video(source, str(scratch), ExtractConfig(face=None),
                                                          RunOptions().max_chunk_bytes, threads=1)),
    }
    return {"n_frames": n_frames, "seconds": seconds, **times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "decode.md")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rows = ["| video | stage | seconds | frames/s per core | × real time |", "|---|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for label, size in SIZES.items():
            clip = Path(tmp) / f"{label}.mp4"
            make_talking_head(clip, seconds=args.seconds, fps=25, size=size, sample_rate=44100, channels=2)
            result = measure(clip, Path(tmp) / f"prep-{label}", args.repeats)
            for stage in ("probe", "frames", "audio", "extract"):
                elapsed = result[stage]
                rows.append(f"| {label} {args.seconds:.0f} s | {stage} | {elapsed:.3f} | "
                            f"{result['n_frames'] / elapsed:,.0f} | {result['seconds'] / elapsed:,.1f} |")
    publish(rows, "Decode throughput, one core (process and ffmpeg pinned to one CPU)", args.out)


if __name__ == "__main__":
    main()
