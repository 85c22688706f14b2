"""Each method's view of a decoded sample: the named tensors its training step reads (shapes: ``avmodels.data``).

A view is ``view(sample, rng) -> dict``. ``rng`` is a seeded numpy Generator for training-time randomness, or
None for the deterministic choice used in evaluation (centre crops). Images stay uint8 CHW here so that batches
cross to the GPU at a quarter of the float size; the Prefetcher scales them to [-1, 1] there. Every view also
returns ``key`` (the sample key) and ``speaker`` (int64 index into dataset.json ``speakers``).
"""
from __future__ import annotations

import re

import numpy as np
import torch

from avprep.features.mfcc import pre_emphasis
from avprep.features.spectrogram import earsr_spectrogram
from avprep.features.timebase import fit_length
from avprep.media.audio import SAMPLE_RATE

WAV2PIX_SAMPLES = SAMPLE_RATE  # Wav2Pix's speech encoder reads 1 s
WAV2PIX_PRE_EMPHASIS = 0.95


def wav2pix(sample: dict, rng: np.random.Generator | None) -> dict:
    return {**_identity(sample), "image": _image(sample["image.jpg"]), "wrong": _image(sample["wrong.jpg"]),
            "audio": torch.from_numpy(wav2pix_audio(sample["audio.flac"], rng))}


def atvgnet(sample: dict, rng: np.random.Generator | None) -> dict:
    landmarks = sample["landmarks.npy"].astype(np.float32)
    return {**_identity(sample), "frames": _clip(sample, "f", "jpg"),
            "landmarks": torch.from_numpy(landmarks.reshape(len(landmarks), -1)),
            "mfcc": _array(sample["mfcc.npy"])}


def davs(sample: dict, rng: np.random.Generator | None) -> dict:
    return {**_identity(sample), "frames": _clip(sample, "f", "jpg"), "mfcc": _array(sample["mfcc.npy"])}


def headgan(sample: dict, rng: np.random.Generator | None) -> dict:
    return {**_identity(sample), "frames": _clip(sample, "f", "jpg"), "nmfc": _clip(sample, "nmfc", "png"),
            "reference": _image(sample["ref.jpg"]), "audio_features": _array(sample["audio_features.npy"])}


def ear_sr(sample: dict, rng: np.random.Generator | None) -> dict:
    spectrogram = earsr_spectrogram(sample["audio.flac"]).values
    return {**_identity(sample), "hr": _image(sample["image.jpg"]), "lr": _image(sample["lr.png"]),
            "spectrogram": torch.from_numpy(spectrogram[None].astype(np.float32))}


VIEWS = {"wav2pix": wav2pix, "atvgnet": atvgnet, "davs": davs, "headgan": headgan, "ear_sr": ear_sr}


def wav2pix_audio(audio: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """Wav2Pix's own preprocessing of its 1 s input: crop, peak-normalise, pre-emphasis 0.95.

    The stored slice is longer (8 s around the frame) so that training can draw a different second each time.
    """
    spare = max(len(audio) - WAV2PIX_SAMPLES, 0)
    start = int(rng.integers(spare + 1)) if rng is not None else spare // 2
    clip = fit_length(audio[start:], WAV2PIX_SAMPLES)
    peak = np.abs(clip).max()
    return pre_emphasis(clip / peak if peak > 0 else clip, WAV2PIX_PRE_EMPHASIS).astype(np.float32)


def _identity(sample: dict) -> dict:
    return {"key": sample["__key__"], "speaker": torch.tensor(sample["meta.json"]["speaker_index"], dtype=torch.int64)}


def _image(image: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> CHW uint8 (a copy: the decoded array is not kept)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _array(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _clip(sample: dict, prefix: str, extension: str) -> torch.Tensor:
    """``prefix000.ext``, ``prefix001.ext``, ... stacked to T x 3 x H x W; T must be the sample's n_frames."""
    pattern = re.compile(rf"{prefix}\d{{3}}\.{extension}")
    names = sorted(name for name in sample if pattern.fullmatch(name))
    expected = sample["meta.json"]["n_frames"]
    if len(names) != expected:
        raise ValueError(f"{sample['__key__']}: {len(names)} {prefix}NNN.{extension} members, meta says {expected}")
    return torch.stack([_image(sample[name]) for name in names])
