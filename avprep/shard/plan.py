"""Which samples a recipe cuts from a prep folder, and which split each falls in: deterministic from the seed."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from avprep.features.mfcc import STORED as STORED_MFCC
from avprep.pipeline.store import PrepDir
from avprep.shard.placement import box_motion, window_boxes, window_transforms
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
    label: str | None = None  # the video's label (LRW word, GRID sentence, metadata "label")
    label_index: int | None = None  # its position in dataset.json "labels"
    attributes: tuple[tuple[str, object], ...] = ()  # the video's metadata columns (--meta), sorted by name


def plan_samples(prep: str | Path, recipe: Recipe,
                 left_out: list[str] | None = None) -> tuple[list[SampleRef], list[str], list[str]]:
    """Every clip window of ``recipe`` in ``prep``, with its split; the sorted speaker and label lists.

    Windows of ``clip_frames`` consecutive frames of one face track, every frame passing the recipe's quality,
    start every ``stride_s`` seconds along each run of such frames (``window = "start"``), or one window sits in
    the middle of each video (``"centre"``), moved by ``window_offset`` frames. Samples are ordered by a seeded
    hash of their key within each split, so shards mix speakers and videos. A video without a speaker counts as
    a speaker of its own (LRW publishes no speaker ids). Tracks the recipe leaves out are said in ``left_out``.
    """
    records = [r for r in PrepDir(prep).records() if r["status"] == "ok" and "tracks" in r]
    if not records:
        raise RecipeError(f"{prep}: no successfully extracted video with face analysis")
    _check_inputs(records, recipe)
    speaker_of = {r["video_id"]: r.get("speaker") or r["video_id"] for r in records}
    label_of = {r["video_id"]: r.get("label") for r in records}
    attributes_of = {r["video_id"]: tuple(sorted((r.get("attributes") or {}).items())) for r in records}
    windows = [w for r in records for w in _windows(Path(prep) / "videos" / r["video_id"], r, recipe, left_out)]
    splits = _assign_splits(records, speaker_of, recipe)
    speakers = sorted(set(speaker_of.values()))
    labels = sorted({label for label in label_of.values() if label is not None})
    number = {speaker: i for i, speaker in enumerate(speakers)}
    label_number = {label: i for i, label in enumerate(labels)}
    samples = [SampleRef(f"{video}-t{track}-f{start:06d}", splits[video], speaker_of[video], number[speaker_of[video]],
                         video, track, start, recipe.clip_frames, label_of[video], label_number.get(label_of[video]),
                         attributes_of[video])
               for video, track, start in windows]
    samples.sort(key=lambda s: (s.split, _hash(recipe.seed, s.key)))
    return samples, speakers, labels


def _moving_tracks(folder: Path, record: dict, recipe: Recipe, track: np.ndarray, face: np.ndarray):
    """(track, motion) of each track whose recipe windows move more than ``max_box_motion`` over the video."""
    transforms = np.load(folder / "align.npy", mmap_mode="r")
    canonical = record["arrays"]["crops"]["size"]
    for number in sorted(set(track[track >= 0].tolist())):
        rows = np.flatnonzero((track == number) & face)
        boxes = window_boxes(window_transforms(np.asarray(transforms)[rows], recipe, canonical), recipe.image_size)
        motion = box_motion(boxes, record["width"], record["height"])
        if motion > recipe.max_box_motion:
            yield number, motion


def _check_inputs(records: list[dict], recipe: Recipe) -> None:
    """Refuse early, with the fix, when the prep folder lacks what the recipe's fields need."""
    stored_mfcc = recipe.mfcc if recipe.mfcc in STORED_MFCC else STORED_MFCC[0]  # computed ones: analysed audio
    needs = {"mfcc": f"mfcc_{stored_mfcc}", "nmfc": "morphable_camera", "audio_features": "headgan_audio"}
    for field, array in needs.items():
        if field in recipe.fields and any(array not in r["arrays"] for r in records):
            raise RecipeError(f"recipe {recipe.name} needs {array}.npy, which extract wrote for no or only some "
                              "videos: re-run avprep extract without --no-audio-features / --no-morphable")
    if "audio_features" in recipe.fields:
        missing = [r["video_id"] for r in records if not ({"asr", "transcript"} & r["arrays"].keys())]
        if missing:
            raise RecipeError(f"recipe {recipe.name} needs ASR character features, which {len(missing)} videos lack "
                              f"(e.g. {missing[0]}): run avprep extract --asr pocketsphinx (English) or --asr-model "
                              "MODEL.onnx, or put timed transcripts (<clip>.transcript.json) beside the videos and "
                              "extract again")


def sample_rate_of(record: dict, recipe: Recipe) -> float:
    """The frame rate a video's samples are cut at: the recipe's ``fps``, or the video's own."""
    return record["fps"] if recipe.fps is None or recipe.fps == record["fps"] else float(recipe.fps)


def source_frames(record: dict, recipe: Recipe, first: int, count: int) -> list[int]:
    """The video's frames for ``count`` sample frames from sample frame ``first`` at the recipe's rate."""
    return nearest_frames(record, sample_rate_of(record, recipe), first, count)


def nearest_frames(record: dict, rate: float, first: int, count: int) -> list[int]:
    """The video's frames for ``count`` frames at ``rate`` from frame ``first``: themselves at the video's own
    rate; otherwise the frame nearest each one's time (repeated or skipped as the rates differ)."""
    if rate == record["fps"]:
        return list(range(first, first + count))
    nearest = np.floor(np.arange(first, first + count) * record["fps"] / rate + 0.5)  # a tie goes to the later
    return np.minimum(nearest, record["n_frames"] - 1).astype(int).tolist()


def frame_count_at(record: dict, rate: float) -> int:
    """How many frames a video has at ``rate`` (those whose time falls inside it)."""
    return record["n_frames"] if rate == record["fps"] else int(np.ceil(record["n_frames"] * rate / record["fps"]))


def _windows(folder: Path, record: dict, recipe: Recipe, left_out: list[str] | None = None):
    """(video_id, track, start frame) of every clip window in one video, in frames at the recipe's rate
    (``source_frames`` maps them to the video's): its frames pass the recipe's quality and, when the recipe reads
    audio, have real audio (``has_audio``, moved by the offset the recipe applies); with ``crop_mode = "video"``,
    not on a track whose windows move more than ``max_box_motion`` (said in ``left_out``)."""
    table = pq.read_table(folder / "frames.parquet").to_pydict()
    track = np.asarray(table["track"])
    passes = np.asarray(table[recipe.quality], dtype=bool) & (track >= 0)
    if recipe.crop_mode == "video":
        for moving in _moving_tracks(folder, record, recipe, track, np.asarray(table["face"], dtype=bool)):
            passes &= track != moving[0]
            if left_out is not None:
                left_out.append(f"{record['video_id']} track {moving[0]}: its face moves {moving[1]:.2f} of the "
                                f"frame (more than max_box_motion {recipe.max_box_motion})")
    if AUDIO_FIELDS & set(recipe.fields) and "has_audio" in table:  # preps before schema 2 have no such column
        has_audio = np.asarray(table["has_audio"], dtype=bool)
        moved = np.arange(len(track)) + int(round(recipe.audio_shift_s(record) * record["fps"]))
        inside = (moved >= 0) & (moved < len(track))
        passes &= inside & has_audio[np.clip(moved, 0, len(track) - 1)]
    rate = sample_rate_of(record, recipe)
    if rate != record["fps"]:  # windows of the frames nearest the recipe's frame times
        at_rate = nearest_frames(record, rate, 0, frame_count_at(record, rate))
        track, passes = track[at_rate], passes[at_rate]
    if recipe.window == "centre":
        first = (len(track) - recipe.clip_frames) // 2 + recipe.window_offset
        clip = slice(first, first + recipe.clip_frames)
        if first >= 0 and clip.stop <= len(track) and passes[clip].all() and len(set(track[clip])) == 1:
            yield record["video_id"], int(track[first]), first
        return
    stride = max(1, round(recipe.stride_s * rate))
    start = 0
    while start < len(track):
        if not passes[start]:
            start += 1
            continue
        end = start
        while end < len(track) and passes[end] and track[end] == track[start]:
            end += 1
        for first in range(start + recipe.window_offset, end - recipe.clip_frames + 1, stride):
            yield record["video_id"], int(track[start]), first
        start = end


def _assign_splits(records: list[dict], speaker_of: dict[str, str], recipe: Recipe) -> dict[str, str]:
    """video_id -> split.

    ``speaker`` (open set): whole speakers go to one split. ``video`` (closed set): each speaker's videos spread
    over the splits. ``dataset``: the dataset's own split (LRW's folders, a metadata ``split`` column).
    ``speaker+video``: the open splits (every name not in ``closed_splits``) divide the speakers by their
    fractions; then the videos of each speaker of a training split (``train``, or halves ``train_a``,
    ``train_b``) are divided between that split and the closed splits, in proportion to their fractions
    (held-out videos of training speakers: a closed-set test beside the open one).
    """
    if recipe.split_by == "dataset":
        missing = [r["video_id"] for r in records if not r.get("dataset_split")]
        if missing:
            raise RecipeError(f"split.by = 'dataset' needs each video's own split, which {len(missing)} videos lack "
                              f"(e.g. {missing[0]}): extract with --layout lrw, or a 'split' column in --meta")
        return {r["video_id"]: r["dataset_split"] for r in records}
    if recipe.split_by == "video":
        return _by_video(speaker_of, recipe.fractions, recipe.seed)
    fractions = recipe.fractions
    if recipe.split_by == "speaker+video":
        fractions = tuple((name, f) for name, f in recipe.fractions if name not in recipe.closed_splits)
    speakers = _divide(sorted(set(speaker_of.values())), fractions, recipe.seed)
    splits = {video: speakers[speaker] for video, speaker in speaker_of.items()}
    if recipe.split_by == "speaker+video":
        closed = tuple((name, f) for name, f in recipe.fractions if name in recipe.closed_splits)
        for training in recipe.training_splits:
            members = {video: speaker for video, speaker in speaker_of.items() if splits[video] == training}
            splits.update(_by_video(members, ((training, dict(recipe.fractions)[training]), *closed), recipe.seed))
    return splits


def _by_video(speaker_of: dict[str, str], fractions, seed: int) -> dict[str, str]:
    """Each speaker's videos divided over the splits by their fractions."""
    by_speaker: dict[str, list[str]] = {}
    for video, speaker in speaker_of.items():
        by_speaker.setdefault(speaker, []).append(video)
    return {video: split for videos in by_speaker.values()
            for video, split in _divide(sorted(videos), fractions, seed).items()}


def _divide(units: list[str], fractions, seed: int) -> dict[str, str]:
    """Units in seeded-hash order cut into the split ``fractions`` ((name, share), scaled to sum to 1); every
    split with a share gets at least one unit when there are enough units."""
    names = [name for name, fraction in fractions if fraction > 0]
    shares = np.array([fraction for _, fraction in fractions if fraction > 0])
    shares = shares / shares.sum()
    counts = np.floor(shares * len(units)).astype(int)
    for i in np.argsort(-(shares * len(units) - counts))[: len(units) - counts.sum()]:
        counts[i] += 1
    if len(units) >= len(names):
        while (counts == 0).any():
            counts[np.argmax(counts)] -= 1
            counts[np.argmin(counts)] += 1
    ordered = sorted(units, key=lambda unit: _hash(seed, unit))
    bounds = np.cumsum(counts)
    return {unit: names[int(np.searchsorted(bounds, i, side="right"))] for i, unit in enumerate(ordered)}


def _hash(seed: int, text: str) -> str:
    return hashlib.sha1(f"{seed}:{text}".encode()).hexdigest()


def read_record(prep: str | Path, video_id: str) -> dict:
    return json.loads((Path(prep) / "videos" / video_id / "record.json").read_text())
