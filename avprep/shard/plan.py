"""Which samples a recipe cuts from a prep folder, and which split each falls in: deterministic from the seed."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from avprep.pipeline.store import PrepDir
from avprep.shard.recipe import AUDIO_FIELDS, Recipe, RecipeError


@dataclasses.dataclass(frozen=True)
class SampleRef:
    key: str  # <video_id>-t<track>-f<start>: no dots, unique
    split: str
    speaker: str
    speaker_index: int  # position in the sorted speaker list (dataset.json "speakers"): class labels
    video_id: str
    track: int
    start_frame: int
    n_frames: int


def plan_samples(prep: str | Path, recipe: Recipe) -> tuple[list[SampleRef], list[str]]:
    """Every clip window of ``recipe`` in ``prep``, with its split; and the sorted speaker list.

    Windows of ``clip_frames`` consecutive frames of one face track, every frame passing the recipe's quality,
    start every ``stride_s`` seconds along each run of such frames. Samples are ordered by a seeded hash of
    their key within each split, so shards mix speakers and videos.
    """
    records = [r for r in PrepDir(prep).records() if r["status"] == "ok" and "tracks" in r]
    if not records:
        raise RecipeError(f"{prep}: no successfully extracted video with face analysis")
    _check_inputs(records, recipe)
    speaker_of = {r["video_id"]: r.get("speaker") or r["video_id"] for r in records}
    windows = [w for r in records for w in _windows(Path(prep) / "videos" / r["video_id"], r, recipe)]
    splits = _assign_splits(speaker_of, recipe)
    speakers = sorted(set(speaker_of.values()))
    number = {speaker: i for i, speaker in enumerate(speakers)}
    samples = [SampleRef(f"{video}-t{track}-f{start:06d}", splits[video], speaker_of[video], number[speaker_of[video]],
                         video, track, start, recipe.clip_frames) for video, track, start in windows]
    samples.sort(key=lambda s: (s.split, _hash(recipe.seed, s.key)))
    return samples, speakers


def _check_inputs(records: list[dict], recipe: Recipe) -> None:
    """Refuse early, with the fix, when the prep folder lacks what the recipe's fields need."""
    needs = {"mfcc": f"mfcc_{recipe.mfcc}", "nmfc": "morphable_camera", "audio_features": "headgan_audio"}
    for field, array in needs.items():
        if field in recipe.fields and any(array not in r["arrays"] for r in records):
            raise RecipeError(f"recipe {recipe.name} needs {array}.npy, which extract wrote for no or only some "
                              "videos: re-run avprep extract without --no-audio-features / --no-morphable")
    if "audio_features" in recipe.fields:
        missing = [r["video_id"] for r in records if not ({"asr", "transcript"} & r["arrays"].keys())]
        if missing:
            raise RecipeError(f"recipe {recipe.name} needs ASR character features, which {len(missing)} videos lack "
                              f"(e.g. {missing[0]}): run avprep extract --asr-model MODEL.onnx, or put timed "
                              "transcripts (<clip>.transcript.json) beside the videos and extract again")


def _windows(folder: Path, record: dict, recipe: Recipe):
    """(video_id, track, start frame) of every clip window in one video: its frames pass the recipe's quality
    and, when the recipe reads audio, have real audio (``has_audio``, moved by the offset the recipe applies)."""
    table = pq.read_table(folder / "frames.parquet").to_pydict()
    track = np.asarray(table["track"])
    passes = np.asarray(table[recipe.quality], dtype=bool) & (track >= 0)
    if AUDIO_FIELDS & set(recipe.fields) and "has_audio" in table:  # preps before schema 2 have no such column
        has_audio = np.asarray(table["has_audio"], dtype=bool)
        moved = np.arange(len(track)) + int(round(recipe.audio_shift_s(record) * record["fps"]))
        inside = (moved >= 0) & (moved < len(track))
        passes &= inside & has_audio[np.clip(moved, 0, len(track) - 1)]
    stride = max(1, round(recipe.stride_s * record["fps"]))
    start = 0
    while start < len(track):
        if not passes[start]:
            start += 1
            continue
        end = start
        while end < len(track) and passes[end] and track[end] == track[start]:
            end += 1
        for first in range(start, end - recipe.clip_frames + 1, stride):
            yield record["video_id"], int(track[start]), first
        start = end


def _assign_splits(speaker_of: dict[str, str], recipe: Recipe) -> dict[str, str]:
    """video_id -> split. Open set: whole speakers go to one split. Closed set: each speaker's videos spread."""
    if recipe.split_by == "speaker":
        speakers = _divide(sorted(set(speaker_of.values())), recipe)
        return {video: speakers[speaker] for video, speaker in speaker_of.items()}
    by_speaker: dict[str, list[str]] = {}
    for video, speaker in speaker_of.items():
        by_speaker.setdefault(speaker, []).append(video)
    return {video: split for videos in by_speaker.values() for video, split in _divide(sorted(videos), recipe).items()}


def _divide(units: list[str], recipe: Recipe) -> dict[str, str]:
    """Units in seeded-hash order cut into the split fractions; every split with a share gets at least one unit
    when there are enough units."""
    names = [name for name, fraction in recipe.fractions if fraction > 0]
    shares = np.array([fraction for _, fraction in recipe.fractions if fraction > 0])
    counts = np.floor(shares * len(units)).astype(int)
    for i in np.argsort(-(shares * len(units) - counts))[: len(units) - counts.sum()]:
        counts[i] += 1
    if len(units) >= len(names):
        while (counts == 0).any():
            counts[np.argmax(counts)] -= 1
            counts[np.argmin(counts)] += 1
    ordered = sorted(units, key=lambda unit: _hash(recipe.seed, unit))
    bounds = np.cumsum(counts)
    return {unit: names[int(np.searchsorted(bounds, i, side="right"))] for i, unit in enumerate(ordered)}


def _hash(seed: int, text: str) -> str:
    return hashlib.sha1(f"{seed}:{text}".encode()).hexdigest()


def read_record(prep: str | Path, video_id: str) -> dict:
    return json.loads((Path(prep) / "videos" / video_id / "record.json").read_text())
