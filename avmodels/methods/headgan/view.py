"""HeadGAN's view of a clip.

    frames          uint8    Tx3x256x256
    nmfc            uint8    Tx3x256x256  nmfc000.png ...: the NMFC renders
    reference       uint8    3x256x256    ref.jpg, another frame of the same track (or speaker)
    reference_nmfc  uint8    3x256x256    ref_nmfc.png, its NMFC render (shards that hold it)
    mouth           float32  Tx2          mouth.npy, the mouth centres in crop pixels (shards that hold it)
    audio_features  float32  Tx300        84 statistics + 8 x 27 characters
    audio, fps      float32  samples      the clip's sound, 16 kHz (shards that hold it)
"""
from __future__ import annotations

import numpy as np

from avmodels import views


def view(sample: dict, rng: np.random.Generator | None) -> dict:
    out = {**views.identity(sample), "frames": views.clip(sample, "f", "jpg"),
           "nmfc": views.clip(sample, "nmfc", "png"), "reference": views.image(sample["ref.jpg"]),
           "audio_features": views.array(sample["audio_features.npy"])}
    if "ref_nmfc.png" in sample:
        out["reference_nmfc"] = views.image(sample["ref_nmfc.png"])
    if "mouth.npy" in sample:
        out["mouth"] = views.array(sample["mouth.npy"])
    if "audio.flac" in sample:
        out.update(views.clip_audio(sample))
    return out
