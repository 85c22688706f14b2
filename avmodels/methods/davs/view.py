"""DAVS's view of a clip: every frame, the word label, and the official loader's draws as indices into the clip.

    frames           uint8    Tx3x256x256  the clip (T = 25)
    mfcc             float32  Tx20x12
    label            int64                 the word (dataset.json labels)
    classified       int64    12           the frames the word classifier reads: every other frame from 0 or 1
    generated        int64                 where the 6 generated frames start among the classified ones
    identity_start   int64                 the first of the 20 consecutive frames the identity discriminator reads
    reference_index  int64                 the reference frame
    audio, fps       float32  T/fps s      with audio.flac: the clip's audio from its first frame

Evaluation (no ``rng``) takes frame 0 for every draw.
"""
from __future__ import annotations

import numpy as np
import torch

from avmodels import views

CLASSIFIED = 12  # frames the word classifier reads: every other frame from frame 0 or 1 (``pred_length``)
GENERATED = 6  # consecutive classified frames generated in a training step (``sequence_length``)
IDENTITY = 20  # consecutive frames whose person-id features the identity discriminator reads (``disfc_length``)
MOUTH = (slice(170, 234), slice(64, 192))  # the official fixed mouth mask on the 256 px crop (rows, columns)


def view(sample: dict, rng: np.random.Generator | None) -> dict:
    meta = sample["meta.json"]
    if meta.get("label_index") is None:
        raise ValueError(f"{sample['__key__']}: DAVS trains on word labels and this clip has none (shard an LRW "
                         "tree, or give extract a --meta CSV with a 'label' column)")
    frames = meta["n_frames"]
    if frames < max(2 * CLASSIFIED, IDENTITY):
        raise ValueError(f"{sample['__key__']}: DAVS needs clips of at least {2 * CLASSIFIED} frames, got {frames}")
    draw = (lambda high: int(rng.integers(high))) if rng is not None else (lambda high: 0)
    phase = draw(frames - 2 * CLASSIFIED + 1)
    out = {**views.identity(sample), "frames": views.clip(sample, "f", "jpg"), "mfcc": views.array(sample["mfcc.npy"]),
           "label": torch.tensor(meta["label_index"], dtype=torch.int64),
           "classified": torch.arange(phase, phase + 2 * CLASSIFIED, 2),
           "generated": torch.tensor(draw(CLASSIFIED - GENERATED + 1)),
           "identity_start": torch.tensor(draw(frames - IDENTITY + 1)),
           "reference_index": torch.tensor(draw(frames))}
    if "audio.flac" in sample:
        out.update(views.clip_audio(sample))
    return out
