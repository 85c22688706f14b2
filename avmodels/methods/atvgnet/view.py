"""ATVGnet's view of a clip: an example frame r (random in [3, 7] in training, 3 in evaluation, as the official
loader draws it) and the 16 target frames after it.

    reference          uint8    3x128x128     the example frame r
    frames             uint8    16x3x128x128  the targets r+1 .. r+16 (not with the option images=false)
    example_landmarks  float32  68x2          landmarks.npy at r, crop pixels
    landmarks          float32  16x68x2       landmarks.npy of the targets
    mfcc               float32  16x28x12      mfcc.npy of the targets
    audio, fps         float32  16/fps s      with audio.flac: the audio from the first target's time
"""
from __future__ import annotations

import numpy as np
import torch

from avmodels import views
from avprep.features.timebase import fit_length
from avprep.media.audio import SAMPLE_RATE

TARGETS = 16  # frames generated per clip
EXAMPLES = (3, 7)  # the example (reference) frame's index range in a clip


def view(sample: dict, rng: np.random.Generator | None, images: bool = True) -> dict:
    """With ``images`` (the stage option ``view = { images = false }`` turns it off) the example image and the
    targets' images; the audio, when the shards hold it, starts at the first target frame's time."""
    landmarks = sample["landmarks.npy"].astype(np.float32)
    frames = len(landmarks)
    last = min(EXAMPLES[1], frames - TARGETS - 1)
    if last < EXAMPLES[0]:
        raise ValueError(f"{sample['__key__']}: ATVGnet needs clips of at least {EXAMPLES[0] + TARGETS + 1} frames, "
                         f"got {frames}")
    example = int(rng.integers(EXAMPLES[0], last + 1)) if rng is not None else EXAMPLES[0]
    targets = slice(example + 1, example + 1 + TARGETS)
    out = {**views.identity(sample), "example_landmarks": torch.from_numpy(landmarks[example]),
           "landmarks": torch.from_numpy(landmarks[targets]), "mfcc": views.array(sample["mfcc.npy"][targets])}
    if "audio.flac" in sample:
        meta = sample["meta.json"]
        start = int(round(((example + 1) / meta["fps"] - meta["audio_start_s"]) * SAMPLE_RATE))
        span = int(round(TARGETS / meta["fps"] * SAMPLE_RATE))
        out["audio"] = torch.from_numpy(fit_length(sample["audio.flac"][max(start, 0):], span).astype(np.float32))
        out["fps"] = torch.tensor(meta["fps"], dtype=torch.float32)
    if images:
        out["reference"] = views.image(sample[f"f{example:03d}.jpg"])
        out["frames"] = views.images([sample[f"f{i:03d}.jpg"] for i in range(targets.start, targets.stop)])
    return out
