"""Cost of the audio features and the morphable-model fit and render, and what they add to extract.

    python benchmarks/features_throughput.py [--seconds 20] [--out benchmarks/results/features.md]

Pinned to one core. On a generated 360p talking head: each audio feature over the whole clip, the 3DMM fit of
its track and an NMFC render at 256², reported per video frame; then a full extract with every stage against
the face-only extract (no audio features, no 3DMM), timed in the same rounds.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from _bench import best_of, publish

from avprep.features import atvgnet_mfcc, earsr_spectrogram, headgan_lowlevel, syncnet_mfcc
from avprep.media.audio import read_flac
from avprep.morphable import apply_affine, fit_video, load_default_model, nmfc_colours, posed_vertices, render_nmfc
from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import extract_video
from avprep.synth.talking_head import make_talking_head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "features.md")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_talking_head(clip, seconds=args.seconds, size=(640, 360))
        source = discover([clip])[0]
        full, face_only = ExtractConfig(), ExtractConfig(audio_features=False, morphable=False)
        extract = lambda config: extract_video(source, str(Path(tmp) / "prep"), config, 64 << 20, threads=1)
        record = extract(full)
        folder = Path(tmp) / "prep" / "videos" / record["video_id"]
        audio, _ = read_flac(folder / "audio.flac")
        n, fps = record["n_frames"], record["fps"]
        model = load_default_model()
        frames, fit = fit_video(model, folder)[0]
        align = np.load(folder / "align.npy")
        colours = nmfc_colours(model)
        render = lambda k: render_nmfc(apply_affine(posed_vertices(model, fit.identity, fit.expression[k],
                                                                   fit.camera[k]), align[frames[k]]),
                                       model.triangles, colours, size=256)
        render(0)  # compile
        per_frame = {
            "SyncNet MFCC": best_of(args.repeats, lambda: syncnet_mfcc(audio, fps, n)) / n,
            "ATVGnet MFCC": best_of(args.repeats, lambda: atvgnet_mfcc(audio, fps, n)) / n,
            "HeadGAN audio statistics": best_of(args.repeats, lambda: headgan_lowlevel(audio, fps, n)) / n,
            "Ear-SR spectrogram (one 4 s clip per frame)": best_of(args.repeats, lambda: earsr_spectrogram(audio)),
            "3DMM fit (whole track)": best_of(args.repeats, lambda: fit_video(model, folder)) / n,
            "NMFC render 256²": best_of(args.repeats, lambda: [render(k) for k in range(0, len(frames), 10)])
            / len(range(0, len(frames), 10)),
        }
        rounds = [(best_of(1, lambda: extract(face_only)), best_of(1, lambda: extract(full)))
                  for _ in range(args.repeats)]
        face_s, full_s = (min(column) for column in zip(*rounds))
    rows = ["| work | ms per video frame |", "|---|---:|"]
    rows += [f"| {name} | {seconds * 1000:.3f} |" for name, seconds in per_frame.items()]
    rows += ["", "| extract (360p, one core) | frames/s |", "|---|---:|",
             f"| face only | {n / face_s:.0f} |", f"| everything (faces, 3DMM, audio features) | {n / full_s:.0f} |",
             f"| cost of 3DMM + audio features | {100 * (full_s / face_s - 1):+.0f}% |"]
    publish(rows, f"Audio features and 3DMM, {args.seconds:.0f} s clip at 25 fps, one core", args.out)


if __name__ == "__main__":
    main()
