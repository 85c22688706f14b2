"""Build one sample's tar members from a prep folder: recipe crops, low-res faces, landmarks, audio, features.

Everything is cut from what extract stored: recipe crops are square sub-windows of the canonical crops (no
second decode of the video), and every audio slice and feature window is placed by frame time, shifted by the
stored A/V offset when the recipe asks and the estimate is confident.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import soundfile

from avprep.face import align, still
from avprep.features.asr import headgan_asr_window
from avprep.features.mfcc import MFCC_KINDS
from avprep.features.timebase import TimedFeature, windows_at_frames
from avprep.media.audio import SAMPLE_RATE
from avprep.media.images import downsample, jpeg, png
from avprep.shard.placement import crop_transform, fixed_square, window_boxes, window_transforms
from avprep.shard.plan import SampleRef, read_record, sample_rate_of, source_frames
from avprep.shard.recipe import Recipe

JPEG_QUALITY = 95
MFCC_RATE = 100.0


def frame_names(recipe: Recipe) -> list[str]:
    """Member names of a sample's frames: ``image.jpg`` for single frames, ``f000.jpg``... for clips."""
    return ["image.jpg"] if recipe.clip_frames == 1 else [f"f{i:03d}.jpg" for i in range(recipe.clip_frames)]


class PrepVideo:
    """One extracted video's stored outputs, opened lazily and kept for the samples cut from it."""

    def __init__(self, prep: Path, video_id: str):
        self.video_id = video_id
        self.folder = prep / "videos" / video_id
        self.record = read_record(prep, video_id)
        self.fps = self.record["fps"]
        self.canonical = self.record["arrays"]["crops"]["size"]
        self._crops = tarfile.open(self.folder / "crops.tar")
        self.align = np.load(self.folder / "align.npy", mmap_mode="r")
        self._computed: dict = {}  # MFCC kinds extract does not store; track squares

    @functools.cached_property
    def quality(self) -> dict:
        return pq.read_table(self.folder / "frames.parquet", columns=["track", "good", "face"]).to_pydict()

    @functools.cached_property
    def characters(self) -> np.ndarray:
        """HeadGAN's 8-frame character window for every frame, computed once per video (not per sample)."""
        per_frame = np.asarray(self.array("asr" if "asr" in self.record["arrays"] else "transcript"))
        return headgan_asr_window(TimedFeature(per_frame, self.fps, 0.0, 1 / self.fps, 1 / self.fps)).values

    def array(self, name: str) -> np.ndarray:
        return np.load(self.folder / self.record["arrays"][name]["file"], mmap_mode="r")

    def mfcc(self, kind: str) -> np.ndarray:
        """The video's MFCC rows at 100 Hz: extract's stored ``mfcc_<kind>``, or, for a kind extract does not
        store (DAVS's), computed once from the stored audio as extract computes the others."""
        if f"mfcc_{kind}" in self.record["arrays"]:
            return self.array(f"mfcc_{kind}")
        if kind not in self._computed:
            frames = self.record["n_frames"]
            self._computed[kind] = MFCC_KINDS[kind](self.audio(0.0, frames / self.fps), self.fps, frames).values
        return self._computed[kind]

    def canonical_crop(self, frame: int) -> np.ndarray:
        data = self._crops.extractfile(f"{frame:06d}.jpg").read()
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def audio(self, start_s: float, seconds: float) -> np.ndarray:
        """``seconds`` of stored audio from ``start_s`` (zeros outside the recording)."""
        n = int(round(seconds * SAMPLE_RATE))
        first = int(round(start_s * SAMPLE_RATE))
        with soundfile.SoundFile(self.folder / "audio.flac") as flac:
            begin = min(max(first, 0), flac.frames)
            flac.seek(begin)
            samples = flac.read(max(0, min(first + n, flac.frames) - begin), dtype="float32")
        out = np.zeros(n, np.float32)
        out[begin - first: begin - first + len(samples)] = samples
        return out

    def track_boxes(self, track: int, recipe: Recipe) -> np.ndarray:
        """(N, 4) the recipe's aligned window in frame pixels for every frame of ``track`` that has a face."""
        frames = np.flatnonzero((np.asarray(self.quality["track"]) == track) & np.asarray(self.quality["face"]))
        transforms = window_transforms(np.asarray(self.align)[frames], recipe, self.canonical)
        return window_boxes(transforms, recipe.image_size)

    def track_square(self, track: int, recipe: Recipe) -> np.ndarray:
        """``crop_mode = "video"``: one square for the whole track, the median of its windows (computed once)."""
        key = ("square", track, recipe.crop, recipe.image_size)
        if key not in self._computed:
            self._computed[key] = fixed_square(self.track_boxes(track, recipe), recipe.image_size)
        return self._computed[key]

    def close(self) -> None:
        self._crops.close()


def still_crop(image: np.ndarray, points: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """The recipe's crop of a face in a still image (a reference photo) with its 478 landmarks ``points``
    (``avprep.face.still.StillFaces``), placed as extract and shard place it on a frame; and the landmarks moved
    into crop pixels (depth scaled with the image, as ``avprep.morphable.apply_affine``). A recipe whose crops are
    fixed squares (``crop_mode`` "clip" or "video") gets its window axis-aligned, as training saw it. Where the
    window leaves the photo its edge pixels are repeated: a model never sees black wedges it was not trained on."""
    from avprep.morphable import apply_affine

    canonical = 256  # any size: the recipe window is a fixed fraction of the canonical crop
    to_recipe = crop_transform(recipe, canonical) @ np.vstack([still.to_canonical(points, canonical), [0, 0, 1]])
    if recipe.crop_mode != "frame":  # a fixed square: the window's centre and side, axis-aligned, not levelled
        to_recipe = fixed_square(window_boxes(to_recipe[None], recipe.image_size), recipe.image_size)
    return (align.cut(image, to_recipe, recipe.image_size, cv2.BORDER_REPLICATE),
            apply_affine(points, to_recipe[:2]).astype(np.float32))


def recipe_crop(video: PrepVideo, frame: int, recipe: Recipe, placement: np.ndarray | None = None) -> np.ndarray:
    """The recipe's square face crop of ``frame``, resampled once from the canonical crop: the frame's aligned
    window, or where ``placement`` (original-frame pixels -> crop pixels, ``placements``) puts it."""
    canonical = video.canonical_crop(frame)
    to_recipe = crop_transform(recipe, video.canonical) if placement is None else (
        np.vstack([placement, [0, 0, 1]]) @ np.linalg.inv(_to_canonical(video, frame)))[:2]
    factor = np.hypot(to_recipe[0, 0], to_recipe[1, 0])  # the scale of the similarity
    if factor < 1:  # shrinking: area-average first so the crop does not alias; then only a sub-pixel shift is left
        canonical = cv2.resize(canonical, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        to_recipe = np.hstack([to_recipe[:, :2] / factor, to_recipe[:, 2:]])
    size = recipe.image_size
    return cv2.warpAffine(canonical, to_recipe, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def frame_to_recipe(video: PrepVideo, frame: int, recipe: Recipe) -> np.ndarray:
    """2x3 affine from original-frame pixels to the frame's aligned recipe crop."""
    return crop_transform(recipe, video.canonical) @ _to_canonical(video, frame)


def _to_canonical(video: PrepVideo, frame: int) -> np.ndarray:
    return np.vstack([np.asarray(video.align[frame], np.float64), [0, 0, 1]])


def placements(video: PrepVideo, frames: range, recipe: Recipe) -> list[np.ndarray]:
    """Each frame's 2x3 affine from original-frame pixels to crop pixels. ``crop_mode = "frame"``: the frame's
    own aligned window (levelled eyes, the head still in the crop). ``"clip"``: one axis-aligned square for the
    whole clip, the median of its frames' windows (centre and side), so the head moves and turns inside it;
    ``"video"``: the same square for every clip of the track, the median over all its frames (HeadGAN's official
    crop). Where the square leaves the stored canonical crop (5 inter-ocular distances wide) the edge pixels are
    repeated."""
    own = [frame_to_recipe(video, f, recipe) for f in frames]
    if recipe.crop_mode == "frame":
        return own
    if recipe.crop_mode == "video":
        return [video.track_square(int(video.quality["track"][frames[0]]), recipe)] * len(own)
    return [fixed_square(window_boxes(np.array(own), recipe.image_size), recipe.image_size)] * len(own)


def build_sample(sample: SampleRef, recipe: Recipe, video: PrepVideo, other: "OtherFaces") -> dict[str, bytes]:
    """Tar members (field name -> bytes) of one sample: its frames at the recipe's rate (``source_frames``), the
    audio and MFCC windows at those frames' times."""
    frames = source_frames(video.record, recipe, sample.start_frame, sample.n_frames)
    rate = sample_rate_of(video.record, recipe)
    times = np.arange(sample.start_frame, sample.start_frame + sample.n_frames) / rate
    shift = recipe.audio_shift_s(video.record)
    members: dict[str, bytes] = {}
    placed = placements(video, frames, recipe)
    fixed = recipe.crop_mode != "frame"  # one square for the clip or the track: cut where ``placements`` puts it
    crops = [recipe_crop(video, f, recipe, p if fixed else None) for f, p in zip(frames, placed)]
    if "frames" in recipe.fields:
        members.update({name: jpeg(crop, JPEG_QUALITY) for name, crop in zip(frame_names(recipe), crops)})
    if "lr" in recipe.fields:
        members["lr.png"] = png(downsample(crops[0], recipe.lr_size, recipe.lr_filter))
    if {"landmarks", "mouth"} & set(recipe.fields):
        points = np.stack([align.apply(p, np.asarray(video.array("landmarks68")[f], np.float64))
                           for f, p in zip(frames, placed)]).astype(np.float32)
        if "landmarks" in recipe.fields:
            members["landmarks.npy"] = npy(points)
        if "mouth" in recipe.fields:  # HeadGAN's mouth discriminator crops around the median of the lip points
            members["mouth.npy"] = npy(np.median(points[:, 48:68], axis=1))
    if "mfcc" in recipe.fields:
        members["mfcc.npy"] = npy(mfcc_windows(video.mfcc(recipe.mfcc), recipe, times + shift))
    audio_start = None
    if "audio" in recipe.fields:
        middle = (sample.start_frame + (sample.n_frames - 1) / 2) / rate
        audio_start = middle + shift - recipe.audio_s / 2
        members["audio.flac"] = flac(video.audio(audio_start, recipe.audio_s))
    if "audio_features" in recipe.fields:
        members["audio_features.npy"] = npy(headgan_audio_features(video, frames, shift))
    if "nmfc" in recipe.fields:
        members.update({f"nmfc{i:03d}.png": png(image) for i, image in enumerate(_nmfc(video, recipe, frames, placed))})
    reference_of = {}
    if "reference" in recipe.fields:  # the reference in its own frame's window (also for "clip")
        source, reference = other.reference_for(sample, recipe, video)
        reference_of = {"reference_video_id": source.video_id, "reference_frame": reference}
        members["ref.jpg"] = jpeg(recipe_crop(source, reference, recipe), JPEG_QUALITY)
        if "nmfc" in recipe.fields:
            [members["ref_nmfc.png"]] = [png(image) for image in _nmfc(source, recipe, [reference],
                                                                        [frame_to_recipe(source, reference, recipe)])]
    if "wrong" in recipe.fields:
        members["wrong.jpg"] = jpeg(other.face_for(sample, recipe), JPEG_QUALITY)
    meta = dict(key=sample.key, video_id=sample.video_id, speaker=sample.speaker,
                speaker_index=sample.speaker_index, label=sample.label, label_index=sample.label_index,
                **dict(sample.attributes), track=sample.track,
                start_frame=sample.start_frame, n_frames=sample.n_frames, fps=rate, sample_rate=SAMPLE_RATE,
                audio_start_s=None if audio_start is None else round(audio_start - times[0], 6),
                av_offset_frames=video.record.get("av_offset_frames"), audio_shift_s=shift, **reference_of)
    if rate != video.fps:  # which of the video's frames each sample frame is (the nearest to its time)
        meta.update(source_fps=video.fps, source_frames=frames)
    return {"meta.json": json.dumps(meta, sort_keys=True).encode(), **members}


def mfcc_windows(rows: np.ndarray, recipe: Recipe, times: np.ndarray) -> np.ndarray:
    """(T, rows, 12): the recipe's MFCC window of each frame time, its ``mfcc_rows`` rows from ``mfcc_start_s``
    after the time (zeros past the ends): what the shards hold and what sampling feeds the same model."""
    return windows_at_frames(rows, MFCC_RATE, times, recipe.mfcc_start_s, recipe.mfcc_rows)


def audio_mfcc_windows(audio: np.ndarray, recipe: Recipe, fps: float, frames: int) -> np.ndarray:
    """``mfcc_windows`` of the recipe's MFCC (``mfcc``) of a waveform, one per frame at ``fps``."""
    rows = MFCC_KINDS[recipe.mfcc](audio, fps, frames).values
    return mfcc_windows(rows, recipe, np.arange(frames) / fps)


def headgan_audio_features(video: PrepVideo, frames: range, shift: float = 0.0) -> np.ndarray:
    """(T, 300): HeadGAN's 84 low-level statistics and 8 frames x 27 character classes around each frame."""
    moved = np.clip(np.array(frames) + int(round(shift * video.fps)), 0, video.record["n_frames"] - 1)
    return np.concatenate([video.array("headgan_audio")[moved], video.characters[moved]], axis=1).astype(np.float32)


def _nmfc(video: PrepVideo, recipe: Recipe, frames, placed: list[np.ndarray]) -> list[np.ndarray]:
    from avprep.morphable import nmfc_colours, posed_vertices, render_nmfc
    from avprep.morphable.stage import basis

    model = basis(video.record.get("morphable_basis"))
    track = int(video.quality["track"][frames[0]])
    identity = video.array("morphable_identity")[track]
    colours = nmfc_colours(model)
    images = []
    for f, placement in zip(frames, placed):
        vertices = posed_vertices(model, identity, video.array("morphable_expression")[f],
                                  video.array("morphable_camera")[f])
        moved = np.concatenate([align.apply(placement, vertices[:, :2]), vertices[:, 2:]], 1)
        image = render_nmfc(moved, model.triangles, colours, size=recipe.image_size)
        images.append((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
    return images


def _reference_frame(video: PrepVideo, sample: SampleRef, recipe: Recipe) -> int:
    """A frame of the same track outside the clip (inside it when the track is no longer), chosen by the key."""
    track = np.asarray(video.quality["track"])
    passes = np.asarray(video.quality[recipe.quality], dtype=bool) & (track == sample.track)
    candidates = np.flatnonzero(passes)
    clip = source_frames(video.record, recipe, sample.start_frame, sample.n_frames)
    outside = candidates[(candidates < clip[0]) | (candidates > clip[-1])]
    pool = outside if len(outside) else candidates
    return int(pool[_pick(sample.key, len(pool))])


class OtherFaces:
    """Faces from other samples, picked by the sample's key so re-sharding picks the same: Wav2Pix's "wrong
    image" among the split's other speakers, and a reference from another video of the same speaker."""

    def __init__(self, samples: list[SampleRef], videos: "VideoCache"):
        self.samples = samples
        self.videos = videos
        self._pools: dict[tuple[str, str], list[SampleRef]] = {}
        self._same_speaker: dict[tuple[str, str], list[SampleRef]] = {}

    def reference_for(self, sample: SampleRef, recipe: Recipe, video: PrepVideo) -> tuple[PrepVideo, int]:
        """(video, frame) of the sample's reference: ``reference_from = "video"``, a frame of the same track
        outside the clip; ``"speaker"``, the first frame of a clip of another video of the same speaker in the
        same split (the own video's frame when the speaker has no other)."""
        if recipe.reference_from == "speaker" and sample.speaker is not None:
            if (sample.split, sample.speaker) not in self._same_speaker:
                self._same_speaker[sample.split, sample.speaker] = [
                    s for s in self.samples if s.split == sample.split and s.speaker == sample.speaker]
            pool = [s for s in self._same_speaker[sample.split, sample.speaker] if s.video_id != sample.video_id]
            if pool:
                chosen = pool[_pick(sample.key, len(pool))]
                source = self.videos[chosen.video_id]
                return source, source_frames(source.record, recipe, chosen.start_frame, 1)[0]
        return video, _reference_frame(video, sample, recipe)

    def face_for(self, sample: SampleRef, recipe: Recipe) -> np.ndarray:
        pool = self._pool(sample.split, sample.speaker)
        chosen = pool[_pick(sample.key, len(pool))]
        source = self.videos[chosen.video_id]
        return recipe_crop(source, source_frames(source.record, recipe, chosen.start_frame, 1)[0], recipe)

    def _pool(self, split: str, speaker: str) -> list[SampleRef]:
        """The split's samples of other speakers (any split's when the split has one speaker), built once."""
        if (split, speaker) not in self._pools:
            pool = [s for s in self.samples if s.split == split and s.speaker != speaker]
            pool = pool or [s for s in self.samples if s.speaker != speaker]
            if not pool:
                raise ValueError("a 'wrong' face needs at least two speakers")
            self._pools[split, speaker] = pool
        return self._pools[split, speaker]


class VideoCache(dict):
    """video_id -> PrepVideo, opened on first use."""

    def __init__(self, prep: Path):
        super().__init__()
        self.prep = prep

    def __missing__(self, video_id: str) -> PrepVideo:
        self[video_id] = PrepVideo(self.prep, video_id)
        return self[video_id]

    def close(self) -> None:
        for video in self.values():
            video.close()


def _pick(key: str, n: int) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % n




def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def flac(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(samples, -1, 1), SAMPLE_RATE, format="FLAC", subtype="PCM_24")
    return buffer.getvalue()
