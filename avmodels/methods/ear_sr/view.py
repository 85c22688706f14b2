"""Ear-SR's view of a sample: the face, its 8 x 8 copy, what the extract's --meta CSV said of the person, and the
spectrogram of 4 s of the speech.

    hr            uint8    3x128x128  image.jpg
    lr            uint8    3x8x8      lr.png
    gender, age   str                 the --meta CSV's columns ("" where absent)
    spectrogram   float32  1x257x257  avprep.features.spectrogram of the 4 s audio.flac, [-1, 1], time x frequency
                                      (not with the option spectrogram=false)
"""
from __future__ import annotations

import numpy as np
import torch

from avmodels import views
from avprep.features.spectrogram import earsr_spectrogram

ATTRIBUTES = ("gender", "age")  # what the paper's classifiers name, where a --meta CSV gave them


def view(sample: dict, rng: np.random.Generator | None, spectrogram: bool = True) -> dict:
    """``spectrogram`` takes most of the view's time: the stages that hear no audio turn it off."""
    meta = sample["meta.json"]
    out = {**views.identity(sample), "hr": views.image(sample["image.jpg"]), "lr": views.image(sample["lr.png"]),
           **{name: str(meta.get(name) or "") for name in ATTRIBUTES}}
    if spectrogram:
        out["spectrogram"] = torch.from_numpy(earsr_spectrogram(sample["audio.flac"]).values[None].astype(np.float32))
    return out
