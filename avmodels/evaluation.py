"""Trained methods back from their checkpoints, and what a method's ``evaluate`` returns."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

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
    from avmodels.methods import get_method  # the methods import this module's Evaluation

    saved = checkpoints.load(Path(path))
    recipe = checkpoints.recipe_of(saved)
    method = get_method(saved["method"])(recipe.get("model", {}), checkpoints.dataset_of(saved))
    checkpoints.load_networks(method.networks, saved)
    return method, {name: net.to(device).eval() for name, net in method.networks.items()}, saved


def same_speaker_pairs(speakers: np.ndarray) -> np.ndarray:
    """(M, 2) indices pairing each sample with another sample of the same speaker (the next one, cyclically),
    for speakers with two samples or more: real-vs-real pairs give identity measures their ceiling."""
    pairs = []
    for speaker in np.unique(speakers):
        members = np.flatnonzero(speakers == speaker)
        if len(members) > 1:
            pairs.append(np.stack([members, np.roll(members, -1)], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
