"""Wav2Pix's view of a shard sample: the face, a face of another speaker and one second of the speech around it.

    image   uint8    3x128x128  image.jpg
    wrong   uint8    3x128x128  wrong.jpg, a face of another speaker
    audio   float32  16000      1 s of audio.flac: a random crop in training, the centre otherwise;
                                divided by max|x|, pre-emphasis 0.95
"""
from __future__ import annotations

import numpy as np
import torch

from avmodels.views import identity, image
from avprep.features.mfcc import pre_emphasis
from avprep.features.timebase import fit_length
from avprep.media.audio import SAMPLE_RATE

AUDIO_SAMPLES = SAMPLE_RATE  # the speech encoder reads 1 s
PRE_EMPHASIS = 0.95


def view(sample: dict, rng: np.random.Generator | None) -> dict:
    return {**identity(sample), "image": image(sample["image.jpg"]), "wrong": image(sample["wrong.jpg"]),
            "audio": torch.from_numpy(prepared_audio(sample["audio.flac"], rng))}


def prepared_audio(audio: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """Wav2Pix's own preprocessing of its 1 s input: crop, peak-normalise, pre-emphasis 0.95.

    The stored slice is longer (8 s around the frame) so that training can draw a different second each time.
    """
    spare = max(len(audio) - AUDIO_SAMPLES, 0)
    start = int(rng.integers(spare + 1)) if rng is not None else spare // 2
    clip = fit_length(audio[start:], AUDIO_SAMPLES)
    peak = np.abs(clip).max()
    return pre_emphasis(clip / peak if peak > 0 else clip, PRE_EMPHASIS).astype(np.float32)
