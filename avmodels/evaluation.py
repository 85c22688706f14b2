"""Trained methods back from their checkpoints, what a method's ``evaluate`` returns, and the pieces video
methods' evaluations share: the split's samples one by one, and per-sample measures averaged into metrics."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from avmodels.data import split_batches
from avmodels.metrics import sync_offset
from avmodels.training import checkpoint as checkpoints


@dataclasses.dataclass
class Evaluation:
    """``metrics`` (name -> value, each measure beside its ``*_real`` ceiling), picture ``rows`` (N x 3 x H x W
    in [-1, 1], real above generated) and, for video methods, ``videos``: (name, real frames, generated frames,
    audio) clips that eval writes as side-by-side MP4s with sound."""

    metrics: dict
    rows: list[torch.Tensor]
    videos: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = dataclasses.field(default_factory=list)


def load_trained(path: str | Path, device: str | torch.device = "cpu"):
    """(method, networks in eval mode on ``device``, checkpoint) from a ``checkpoint.pt`` or ``stage-*.pt``."""
    from avmodels.methods import (
        get_method,  # the methods import this module's Evaluation
    )

    saved = checkpoints.load(Path(path))
    recipe = checkpoints.recipe_of(saved)
    with torch.random.fork_rng(devices=[]):  # built as the trainer built them: networks kept as initial match
        torch.manual_seed(recipe.get("train", {}).get("seed", 0))
        method = get_method(saved["method"])(recipe.get("model", {}), checkpoints.dataset_of(saved))
    checkpoints.load_networks(method.networks, saved)
    return method, {name: net.to(device).eval() for name, net in method.networks.items()}, saved


def split_samples(data, split: str, view: str, device, limit: int | None,
                  batch_size: int = 8) -> Iterator[tuple[dict, int]]:
    """Each sample of ``split`` as (its batch, its index in the batch), at most ``limit``: a method computes
    what a whole batch needs at index 0. Raises ValueError when the split has no samples."""
    seen = 0
    for batch in split_batches(data, split, view, device, batch_size=batch_size):
        for i in range(len(batch["key"])):
            yield batch, i
            seen += 1
            if limit is not None and seen >= limit:
                return
    if not seen:
        raise ValueError(f"{data}: the {split} split has no samples")


class Measures:
    """Each measure's per-sample values, averaged (NaN-aware) into the metrics ``evaluate`` reports."""

    def __init__(self):
        self.values: dict[str, list[float]] = {}
        self.samples = 0

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(float(value))

    def add_sync(self, generated: np.ndarray, real: np.ndarray, audio: np.ndarray, fps: float, max_lag: int) -> None:
        """The sync of the generated frames with the audio, and of the real frames (the ceiling)."""
        for name, frames in (("sync", generated), ("sync_real", real)):
            offset, confidence = sync_offset(frames, audio, fps, max_lag)
            self.add(f"{name}_abs_offset_frames", abs(offset))
            self.add(f"{name}_confidence", confidence)

    def metrics(self, split: str, **extra) -> dict:
        return {"split": split, "samples": self.samples, **extra,
                **{name: float(np.nanmean(values)) for name, values in sorted(self.values.items())}}


def same_speaker_pairs(speakers: np.ndarray) -> np.ndarray:
    """(M, 2) indices pairing each sample with another sample of the same speaker (the next one, cyclically),
    for speakers with two samples or more: real-vs-real pairs give identity measures their ceiling."""
    pairs = []
    for speaker in np.unique(speakers):
        members = np.flatnonzero(speakers == speaker)
        if len(members) > 1:
            pairs.append(np.stack([members, np.roll(members, -1)], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
