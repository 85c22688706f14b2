"""ATVGnet's view of a clip, as the official loaders draw it: 16 target frames from r+1, r random in [3, 7], and
an example frame: r in the ``at_net`` stage (``LRW_1D_lstm_landmark_pca``), anywhere in the clip in the ``vg_net``
stage (``LRWdataset1D_lstm_gt``: ``example = "anywhere"``, often inside the targets); in evaluation (no rng) the
targets from frame 4 and the example their first frame (the official test loader's ``r = current_frame_id``).

    reference          uint8    3x128x128     the example frame
    frames             uint8    16x3x128x128  the targets (not with the option images=false)
    example_landmarks  float32  68x2          landmarks.npy at the example, crop pixels
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
EXAMPLES = (3, 7)  # the frame before the targets: its index range in a clip (the AT-net loader's)


def view(sample: dict, rng: np.random.Generator | None, images: bool = True, example: str = "before") -> dict:
    """With ``images`` (the stage option ``view = { images = false }`` turns it off) the example image and the
    targets' images; ``example`` "before" (the frame before the targets) or "anywhere" (uniform over the clip);
    the audio, when the shards hold it, starts at the first target frame's time."""
    if example not in ("before", "anywhere"):
        raise ValueError(f"the atvgnet view's example must be 'before' or 'anywhere', not {example!r}")
    landmarks = sample["landmarks.npy"].astype(np.float32)
    frames = len(landmarks)
    last = min(EXAMPLES[1], frames - TARGETS - 1)
    if last < EXAMPLES[0]:
        raise ValueError(f"{sample['__key__']}: ATVGnet needs clips of at least {EXAMPLES[0] + TARGETS + 1} frames, "
                         f"got {frames}")
    if rng is None:
        first = EXAMPLES[0] + 1
        chosen = first
    else:
        first = int(rng.integers(EXAMPLES[0], last + 1)) + 1
        chosen = first - 1 if example == "before" else int(rng.integers(0, frames))
    targets = slice(first, first + TARGETS)
    out = {**views.identity(sample), "example_landmarks": torch.from_numpy(landmarks[chosen]),
           "landmarks": torch.from_numpy(landmarks[targets]), "mfcc": views.array(sample["mfcc.npy"][targets])}
    if "audio.flac" in sample:
        meta = sample["meta.json"]
        start = int(round((first / meta["fps"] - meta["audio_start_s"]) * SAMPLE_RATE))
        span = int(round(TARGETS / meta["fps"] * SAMPLE_RATE))
        out["audio"] = torch.from_numpy(fit_length(sample["audio.flac"][max(start, 0):], span).astype(np.float32))
        out["fps"] = torch.tensor(meta["fps"], dtype=torch.float32)
    if images:
        out["reference"] = views.image(sample[f"f{chosen:03d}.jpg"])
        out["frames"] = views.images([sample[f"f{i:03d}.jpg"] for i in range(targets.start, targets.stop)])
    return out
