"""How still the landmarks and crops of generated talking heads are: the jitter a model would learn from.

    python benchmarks/landmark_stability.py [--out benchmarks/results/landmark_stability.md]

For still and moving generated heads (4 s, 360p) it extracts faces and reports the noise of the upper face's
landmarks (eye corners, nose bridge, temples: points that neither speech nor blinks move) as the standard
deviation of their second difference over frames (smooth head motion has almost none), and on still heads how far
the canonical crop's corners move (``align.npy``; the acceptance bound is 0.5 px).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
from _bench import publish

from avprep.face.align import apply
from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import RunOptions, extract_video
from avprep.synth.talking_head import make_talking_head

UPPER_FACE = [33, 263, 133, 362, 6, 168, 127, 356]  # outer and inner eye corners, nose bridge, temples
HEADS = {"still, astronaut, seed 9": dict(head_motion=0.0, seed=9),
         "still, astronaut, seed 0": dict(head_motion=0.0, seed=0),
         "still, astronaut, seed 3": dict(head_motion=0.0, seed=3),
         "moving, astronaut, seed 1": dict(seed=1),
         "moving, ross, seed 2": dict(seed=2, identity="ross")}


def measure(clip: Path, scratch: Path, still: bool) -> tuple[float, float]:
    """(upper-face landmark noise px, crop corner wobble px or NaN for a moving head)."""
    config = ExtractConfig(morphable=False, audio_features=False)
    extract_video(discover([clip])[0], str(scratch), config, RunOptions().max_chunk_bytes, threads=1)
    video = next(scratch.glob("videos/*"))
    points = np.load(video / "landmarks_raw.npy")[:, UPPER_FACE, :2]
    noise = float(np.diff(points, n=2, axis=0).std())
    if not still:
        return noise, float("nan")
    size = config.face.canonical_size
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    in_frame = np.stack([apply(cv2.invertAffineTransform(m.astype(np.float64)), corners)
                         for m in np.load(video / "align.npy")])
    return noise, float(np.abs(in_frame - in_frame.mean(axis=0)).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "landmark_stability.md")
    args = parser.parse_args()
    rows = ["| generated head (4 s, 360p) | upper-face landmark noise (std of 2nd difference) | crop corner wobble |",
            "|---|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, options) in enumerate(HEADS.items()):
            clip = Path(tmp) / f"head{i}.mp4"
            make_talking_head(clip, seconds=4.0, **options)
            noise, wobble = measure(clip, Path(tmp) / f"prep{i}", still=options.get("head_motion") == 0.0)
            rows.append(f"| {label} | {noise:.2f} px | {'' if np.isnan(wobble) else f'{wobble:.2f} px'} |")
    publish(rows, "Landmark and crop stability", args.out)


if __name__ == "__main__":
    main()
