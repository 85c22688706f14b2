"""Extract throughput with face analysis, per core, against the floor of its two unavoidable costs.

    python benchmarks/face_throughput.py [--seconds 20] [--repeats 3] [--out benchmarks/results/face.md]

The whole process (and the ffmpeg it starts) is pinned to one CPU, so frames/s are per core. For generated
360p and 720p talking heads it times, in one run: ffmpeg decoding alone, MediaPipe's face mesh alone (video
mode, 478 points with iris) on the same decoded frames, and a full single-video extract (probe, audio, decode,
detection, tracking, mesh, smoothing, alignment, crops as JPEG, quality, A/V offset). The pipeline's own
overhead is the extract time beyond decode + mesh.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _bench import publish
from avprep.face.quiet import native_stderr_silenced
from avprep.media.probe import probe
from avprep.media.video import decode_frames
from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import RunOptions, extract_video
from avprep.synth.talking_head import make_talking_head

SIZES = {"360p": (640, 360), "720p": (1280, 720)}


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def mesh_alone(frames: list[np.ndarray]) -> float:
    from mediapipe.python.solutions.face_mesh import FaceMesh

    with native_stderr_silenced():
        mesh = FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
        mesh.process(frames[0])
    elapsed = timed(lambda: [mesh.process(frame) for frame in frames])
    mesh.close()
    return elapsed


def measure(clip: Path, scratch: Path, repeats: int) -> dict:
    """Best of ``repeats`` rounds, each round timing decode, mesh and extract back to back, so that all three
    see the same machine load."""
    info = probe(clip)
    decode = lambda: list(decode_frames(clip, width=info.width, height=info.height, fps=info.fps, threads=1))
    frames = [frame for chunk in decode() for frame in chunk.frames]
    source = discover([clip])[0]
    extract = lambda: extract_video(source, str(scratch), ExtractConfig(), RunOptions().max_chunk_bytes, threads=1)
    rounds = [(timed(decode), mesh_alone(frames), timed(extract)) for _ in range(repeats)]
    decode_s, mesh_s, extract_s = (min(column) for column in zip(*rounds))
    return {"frames": len(frames), "decode": decode_s, "mesh": mesh_s, "extract": extract_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "face.md")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rows = ["| video | decode alone | mesh alone | floor (decode + mesh) | extract with faces | overhead over floor |",
            "|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for label, size in SIZES.items():
            clip = Path(tmp) / f"{label}.mp4"
            make_talking_head(clip, seconds=args.seconds, fps=25, size=size)
            r = measure(clip, Path(tmp) / f"prep-{label}", args.repeats)
            fps = lambda seconds: f"{r['frames'] / seconds:,.0f} f/s"
            floor = r["decode"] + r["mesh"]
            rows.append(f"| {label} {args.seconds:.0f} s | {fps(r['decode'])} | {fps(r['mesh'])} | {fps(floor)} | "
                        f"{fps(r['extract'])} | {100 * (r['extract'] / floor - 1):+.0f}% |")
    publish(rows, "Extract with face analysis, one core", args.out)


if __name__ == "__main__":
    main()
