"""Extract throughput with face analysis, per core, against the floor of its two unavoidable costs.

    python benchmarks/face_throughput.py [--seconds 20] [--repeats 9] [--out benchmarks/results/face.md]

The whole process (and the ffmpeg it starts) is pinned to one CPU, and frames/s are frames over the CPU seconds
spent (this process's threads plus its ffmpeg children): frames per second per core. For generated
360p and 720p talking heads it times, in one run: ffmpeg decoding alone, MediaPipe's face mesh alone (video
mode, 478 points with iris) on the same decoded frames, and a full single-video extract (probe, audio, decode,
detection, tracking, mesh, smoothing, alignment, crops as JPEG, quality, A/V offset; the 3DMM fit and audio
features are off, features_throughput.py measures them). The pipeline's own overhead is the extract time
beyond decode + mesh. The mesh alone is MediaPipe's stock ``FaceMesh.process``; extract drives its landmark
subgraph directly and places the region itself (avprep.face.mesh).
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from _bench import publish

from avprep.face import detect as face_detect
from avprep.face import mesh as face_mesh
from avprep.face.align import cut
from avprep.face.quiet import native_stderr_silenced
from avprep.media.images import jpeg
from avprep.media.probe import probe
from avprep.media.video import decode_frames
from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import RunOptions, extract_video
from avprep.synth.talking_head import make_talking_head

FACES_ONLY = ExtractConfig(morphable=False, audio_features=False)  # 3DMM and audio features: features_throughput.py
SIZES = {"360p": (640, 360), "720p": (1280, 720)}


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of the children it has waited for (ffmpeg)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(work) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``work``. CPU time is what "per core" means, and unlike wall time it does not
    count the moments other programs hold the core, which on a shared machine swing rounds by +-20%."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    work()
    return cpu_seconds() - cpu, time.perf_counter() - wall


def mesh_alone(frames: list[np.ndarray]) -> tuple[float, float]:
    from mediapipe.python.solutions.face_mesh import FaceMesh

    with native_stderr_silenced():
        mesh = FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
        mesh.process(frames[0])
    elapsed = timed(lambda: [mesh.process(frame) for frame in frames])
    mesh.close()
    return elapsed


def crops_alone(frames: list[np.ndarray], transforms: np.ndarray) -> tuple[float, float]:
    """The canonical crops extract must write, on their own: warp each face and encode it as JPEG."""
    config = FACES_ONLY.face
    faces = [(frame, m) for frame, m in zip(frames, transforms) if np.isfinite(m).all()]
    return timed(lambda: [jpeg(cut(frame, m, config.canonical_size), config.jpeg_quality) for frame, m in faces])


def measure(clip: Path, scratch: Path, repeats: int) -> dict:
    """Rounds of decode, mesh, extract and crops back to back (in turn forwards and backwards), so that the four
    of a round see the same machine load.

    Rates are each column's best round, in CPU time; the overhead is the median (and range) over rounds of the
    round's own extract / (decode + mesh) ratio, in CPU time and, for reference, in wall time.
    """
    info = probe(clip)
    chunks = lambda: decode_frames(clip, width=info.width, height=info.height, fps=info.fps, threads=1)
    frames = [frame for chunk in chunks() for frame in chunk.frames]
    decode_alone = lambda: sum(len(chunk.frames) for chunk in chunks())  # frames let go as extract does
    source = discover([clip])[0]
    extract = lambda: extract_video(source, str(scratch), FACES_ONLY, RunOptions().max_chunk_bytes, threads=1)
    extract()
    transforms = np.load(next(scratch.glob("videos/*/align.npy")))
    columns = [lambda: timed(decode_alone), lambda: mesh_alone(frames), lambda: timed(extract),
               lambda: crops_alone(frames, transforms)]
    rounds = np.zeros((repeats, len(columns), 2))  # (round, column, cpu | wall)
    for r in range(repeats):
        for c in (range(len(columns)) if r % 2 == 0 else reversed(range(len(columns)))):  # drifts cancel
            rounds[r, c] = columns[c]()
    floor = rounds[:, 0] + rounds[:, 1]
    overhead = 100 * (rounds[:, 2] / floor - 1)
    beyond_crops = 100 * (rounds[:, 2, 0] / (floor[:, 0] + rounds[:, 3, 0]) - 1)
    decode_s, mesh_s, extract_s, crops_s = rounds[:, :, 0].min(axis=0)
    return {"frames": len(frames), "decode": decode_s, "mesh": mesh_s, "extract": extract_s, "crops": crops_s,
            "overhead": np.median(overhead[:, 0]), "overhead_range": (overhead[:, 0].min(), overhead[:, 0].max()),
            "overhead_best": 100 * (extract_s / (decode_s + mesh_s) - 1), "overhead_wall": np.median(overhead[:, 1]),
            "beyond_crops": np.median(beyond_crops)}


def short_clips(tmp: Path, rounds: int) -> list[str]:
    """A 1.16 s clip (LRW's length) extracted with the worker's MediaPipe graphs built afresh, as every video
    once did, and kept from the previous video, as now: per-video costs weigh most on short clips."""
    clip = tmp / "short.mp4"
    make_talking_head(clip, seconds=1.16, fps=25, size=SIZES["360p"])
    source = discover([clip])[0]
    extract = lambda: extract_video(source, str(tmp / "prep-short"), FACES_ONLY, RunOptions().max_chunk_bytes,
                                    threads=1)

    def afresh() -> None:
        for module in (face_mesh, face_detect):
            module._SHARED.__dict__.clear()
        extract()

    extract()
    pairs = np.array([(timed(afresh)[0], timed(extract)[0]) for _ in range(rounds)])
    ratio = pairs[:, 0] / pairs[:, 1]
    return ["", "| 1.16 s clip, 360p (29 frames) | graphs built per video | graphs kept per worker | speed-up (median, "
            "range) |", "|---|---:|---:|---:|",
            f"| extract with faces | {pairs[:, 0].min():.3f} s | {pairs[:, 1].min():.3f} s | "
            f"{np.median(ratio):.2f}x ({ratio.min():.2f}-{ratio.max():.2f}) |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "face.md")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rows = ["| video | decode alone | mesh alone | floor (decode + mesh) | extract with faces | overhead over floor "
            "(median of rounds) | range | best rounds | median in wall time | crops alone (warp + JPEG) | overhead "
            "beyond floor + crops |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for label, size in SIZES.items():
            clip = Path(tmp) / f"{label}.mp4"
            make_talking_head(clip, seconds=args.seconds, fps=25, size=size)
            r = measure(clip, Path(tmp) / f"prep-{label}", args.repeats)
            fps = lambda seconds, r=r: f"{r['frames'] / seconds:,.0f} f/s"
            floor = r["decode"] + r["mesh"]
            rows.append(f"| {label} {args.seconds:.0f} s | {fps(r['decode'])} | {fps(r['mesh'])} | {fps(floor)} | "
                        f"{fps(r['extract'])} | {r['overhead']:+.0f}% | {r['overhead_range'][0]:+.0f}% to "
                        f"{r['overhead_range'][1]:+.0f}% | {r['overhead_best']:+.0f}% | {r['overhead_wall']:+.0f}% | "
                        f"{fps(r['crops'])} | {r['beyond_crops']:+.0f}% |")
        short = short_clips(Path(tmp), 3 * args.repeats)
    rows += ["", "Targets at 360p: >= 100 frames/s per core, overhead over the floor < 25%.",
             "Frames/s per core are frames over CPU seconds (the process's threads and its ffmpeg children), with "
             "everything pinned to one core. Best round per column. Overheads are medians over rounds of each "
             "round's own ratio in CPU time, with their range, the ratio of the best rounds (each column at its "
             "least disturbed) and the median in wall time. The crops are part of what extract must write but not "
             "of the floor the target names: the last column is the overhead once they are counted."] + short
    publish(rows, "Extract with face analysis, one core", args.out)


if __name__ == "__main__":
    main()
