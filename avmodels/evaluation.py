"""What a method's ``evaluate`` returns, and the pieces evaluations share: a split's samples one by one, per-sample
measures averaged into metrics, the real training faces that identity measures name people against."""
from __future__ import annotations

import dataclasses
import warnings
from typing import Iterator

import numpy as np
import torch

from avmodels.data import split_batches
from avmodels.metrics import sync_offset
from avmodels.pictures import area_resized, to_uint8
from avmodels.progress import tracked
from avprep.shard.folder import ShardDir


@dataclasses.dataclass
class Evaluation:
    """``metrics`` (name -> value, each measure beside its ``*_real`` ceiling and its ``*_baseline`` floor, with
    ``"baselines"``: each baseline -> what it is, and ``"protocols"``), picture ``rows`` (N x 3 x H x W
    in [-1, 1], real above generated) and, for video methods, ``videos``: (name, real frames, generated frames,
    audio) clips that eval writes as side-by-side MP4s with sound."""

    metrics: dict
    rows: list[torch.Tensor]
    videos: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = dataclasses.field(default_factory=list)


def split_samples(data, split: str, view, device, limit: int | None,
                  batch_size: int = 8) -> Iterator[tuple[dict, int]]:
    """Each sample of ``split`` as (its batch, its index in the batch), at most ``limit``, with a progress bar: a
    method computes what a whole batch needs at index 0. Raises ValueError when the split has no samples."""
    shards = ShardDir(data)  # dataset.json read once: the split's size and its tars
    total = shards.samples(split) if limit is None else min(shards.samples(split), limit)
    seen = 0
    for batch, i in tracked(_indexed(split_batches(shards.urls(split), None, view, device, batch_size=batch_size)),
                            total, f"evaluating {split}"):
        yield batch, i
        seen += 1
        if limit is not None and seen >= limit:
            return
    if not seen:
        raise ValueError(f"{data}: the {split} split has no samples")


def _indexed(batches: Iterator[dict]) -> Iterator[tuple[dict, int]]:
    for batch in batches:
        for i in range(len(batch["key"])):
            yield batch, i


class Measures:
    """Each measure's per-sample values, averaged (NaN-aware) into the metrics ``evaluate`` reports."""

    def __init__(self):
        self.values: dict[str, list[float]] = {}
        self.samples = 0

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(float(value))

    def add_beside_floor(self, scores: dict[str, float], floor: dict[str, float], suffix: str = "") -> None:
        """Each ``name`` of ``scores`` as ``name + suffix``, and the floor's value of it as its ``*_baseline``."""
        for name, value in scores.items():
            self.add(name + suffix, value)
            self.add(f"{name}{suffix}_baseline", floor[name])

    def add_sync(self, generated: np.ndarray, real: np.ndarray, audio: np.ndarray, fps: float, max_lag: int) -> None:
        """The sync of the generated frames with the audio, and of the real frames (the ceiling)."""
        for name, frames in (("sync", generated), ("sync_real", real)):
            offset, confidence = sync_offset(frames, audio, fps, max_lag)
            self.add(f"{name}_abs_offset_frames", abs(offset))
            self.add(f"{name}_confidence", confidence)

    def metrics(self, split: str, baselines: dict[str, str], **extra) -> dict:
        """Each measure's mean over the samples it could be taken on; NaN where none (say, dlib found no face);
        ``baselines``: ``described_baselines``' descriptions."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the mean of nothing: NaN, as said
            means = {name: float(np.nanmean(values)) for name, values in sorted(self.values.items())}
        return described_baselines({"split": split, "samples": self.samples, **extra, **means}, baselines)


def described_baselines(metrics: dict, descriptions: dict[str, str]) -> dict:
    """``metrics`` with ``"baselines"``: each ``*_baseline`` measure -> what the floor is, the description of the
    longest prefix in ``descriptions`` it starts with ("" matches every name)."""
    named = {}
    for name in metrics:
        if name.endswith("_baseline"):
            prefixes = [prefix for prefix in descriptions if name.startswith(prefix)]
            if not prefixes:
                raise ValueError(f"{name}: a baseline without a description")
            named[name] = descriptions[max(prefixes, key=len)]
    return {**metrics, "baselines": named}


def headline(metrics: dict, names) -> str:
    """``name generated (baseline B, real R)`` for each of ``names`` metrics has, joined by "; ": the line a
    quick start and the learning benchmark print."""
    parts = []
    for name in names:
        if name in metrics:
            beside = [f"{kind} {metrics[f'{name}_{kind}']:.3g}" for kind in ("baseline", "real")
                      if isinstance(metrics.get(f"{name}_{kind}"), float)]
            parts.append(f"{name} {metrics[name]:.3g}" + (f" ({', '.join(beside)})" if beside else ""))
    return "; ".join(parts)


def same_speaker_pairs(speakers: np.ndarray) -> np.ndarray:
    """(M, 2) indices pairing each sample with another sample of the same speaker (the next one, cyclically),
    for speakers with two samples or more: real-vs-real pairs give identity measures their ceiling."""
    pairs = []
    for speaker in np.unique(speakers):
        members = np.flatnonzero(speakers == speaker)
        if len(members) > 1:
            pairs.append(np.stack([members, np.roll(members, -1)], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)


def training_faces(data, view, key: str, *, limit: int, field: str = "speaker", speakers: set[int] | None = None,
                   per_speaker: int | None = None, size: int | None = None, **view_options) -> tuple:
    """(N x H x W x 3 uint8 real faces ``batch[key]`` of the shards' training splits, each one's ``field``), at
    most ``limit``, area-resized to ``size`` when given; with ``speakers`` only theirs, at most ``per_speaker``
    each, read until each has that many (a closed-set identity gallery)."""
    shards = ShardDir(data)
    faces, values, counts = [], [], dict.fromkeys(speakers or (), 0)
    for batch in split_batches(shards.urls(shards.training_split), None, view, "cpu", **view_options):
        pixels = to_uint8(area_resized(batch[key], size or batch[key].shape[-1]))
        for i, speaker in enumerate(batch["speaker"].tolist()):
            if speakers is not None and counts.get(speaker, per_speaker) >= per_speaker:
                continue
            counts[speaker] = counts.get(speaker, 0) + 1
            faces.append(pixels[i])
            values.append(speaker if field == "speaker" else batch[field][i])
        if len(faces) >= limit or (speakers and min(counts.values()) >= per_speaker):
            break
    if not faces:
        whose = " of the split's speakers" if speakers else ""
        raise ValueError(f"{data}: no training faces{whose} ({shards.training_split})")
    return np.stack(faces[:limit]), np.array(values[:limit])
