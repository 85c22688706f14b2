"""What ``avmodels sample`` hands a method, prepared as the shards prepared it, and how its output is written.

A method declares ``inputs`` (a subset of ``audio``, ``reference``, ``driving``, ``lr``: the ones it needs)
and ``outputs`` (``image``, ``video`` or both), and implements ``sample(nets, inputs, output, device)``:
``image`` returns N x 3 x H x W faces in [-1, 1] (a PNG grid), ``video`` returns T x 3 x H x W frames in
[-1, 1] at ``inputs.fps``, written as an H.264 MP4 with ``inputs.audio`` muxed as AAC (T = the audio's length
in frames, so sound and picture end together).

A reference photo (or the first frame of a video with a face) goes through avprep's face pipeline: MediaPipe's
face mesh, the similarity alignment extract uses, the recipe's crop (``avprep.shard.sample.still_crop``). A
driving video is extracted with avprep's own per-video pipeline into a scratch folder.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from avmodels.pictures import to_uint8
from avprep.face.still import StillFaces, landmarks68
from avprep.media.audio import SAMPLE_RATE, decode_audio
from avprep.media.encode import write_video
from avprep.media.images import downsample
from avprep.media.probe import audio_channels, probe
from avprep.media.video import decode_frames
from avprep.shard.plan import frame_count_at, nearest_frames
from avprep.shard.recipe import Recipe
from avprep.shard.sample import PrepVideo, still_crop

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


class InputProblem(ValueError):
    """An input file that cannot be used as given: the message says why and what to give instead."""


@dataclasses.dataclass
class Reference:
    """A face as the recipe crops it: RGB uint8 (S x S x 3) and its 478 MediaPipe landmarks in crop pixels."""

    image: np.ndarray
    mesh: np.ndarray

    @property
    def landmarks68(self) -> np.ndarray:
        """(68, 2) iBUG points in crop pixels."""
        return landmarks68(self.mesh)


@dataclasses.dataclass
class SampleInputs:
    fps: float  # frame rate of video outputs: the training shards' rate
    recipe: Recipe | None = None  # the checkpoint's recipe: its crop for driving frames
    audio: np.ndarray | None = None  # 16 kHz mono float32
    reference: Reference | None = None
    driving: PrepVideo | None = None  # the driving video, extracted
    lr: np.ndarray | None = None  # a low-resolution face, uint8 RGB
    hr: np.ndarray | None = None  # the face it was made from, when the user gave a larger photo

    @property
    def frames(self) -> int:
        """Frames of a video as long as the audio."""
        return max(1, int(round(len(self.audio) / SAMPLE_RATE * self.fps))) if self.audio is not None else 0

    def driving_frames(self) -> list[int]:
        """The driving video's frames at the model's rate (``fps``), as long as the audio: the frame nearest
        each output frame's time, so a 30 or 50 fps driver moves and speaks in step at the model's 25."""
        record = self.driving.record
        count = frame_count_at(record, self.fps)
        return nearest_frames(record, self.fps, 0, min(count, self.frames or count))


def load_audio(path: Path) -> np.ndarray:
    """16 kHz mono samples of an audio file or of a video's first audio stream."""
    audio = decode_audio(path, channels=audio_channels(path))
    if np.abs(audio).max(initial=0) == 0:
        raise InputProblem(f"{path}: the audio is silent")
    return audio


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 pixels of an image file, or of a video's first frame."""
    if Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputProblem(f"{path}: not a readable image")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    info = probe(path)
    chunk = next(decode_frames(path, width=info.width, height=info.height, fps=info.fps, max_chunk_bytes=1))
    return chunk.frames[0]


def prepare_reference(path: Path, recipe: Recipe) -> Reference:
    """The face in a photo, cropped as the recipe crops faces in training."""
    return _reference(read_image(path), path, recipe)


def _reference(image: np.ndarray, path: Path, recipe: Recipe) -> Reference:
    with StillFaces() as faces:
        points = faces(image)
    if points is None:
        raise InputProblem(f"{path}: no face found (give a photo with one clearly visible face)")
    return Reference(*still_crop(image, points, recipe))


def prepare_lr(path: Path, recipe: Recipe) -> tuple[np.ndarray, np.ndarray | None]:
    """(low-resolution face, the face it came from or None): an image already at the recipe's ``lr_size`` is
    taken as is; a larger face is cropped as in training and downsampled with the recipe's filter."""
    image = read_image(path)
    size = recipe.lr_size or image.shape[0]
    if image.shape[:2] == (size, size):
        return image, None
    face = _reference(image, path, recipe).image
    return downsample(face, size, recipe.lr_filter), face


def prepare_driving(path: Path, scratch: Path, asr: str | None = None) -> PrepVideo:
    """The driving video analysed by extract's own pipeline (faces, landmarks, 3DMM, audio features; with
    ``asr``, the words a built-in recogniser hears, as ``avprep extract --asr``)."""
    from avprep.pipeline.config import ExtractConfig
    from avprep.pipeline.inputs import VideoSource
    from avprep.pipeline.runner import extract_video

    record = extract_video(VideoSource(os.path.abspath(path), "driving", None), str(scratch), ExtractConfig(asr=asr),
                           64 << 20)
    if record["status"] != "ok":
        raise InputProblem(f"{path}: {record['error_kind']}: {record['error']}")
    return PrepVideo(scratch, "driving")


def prepare_inputs(method, recipe: Recipe, fps: float, given: dict[str, Path | None],
                   scratch: Path) -> SampleInputs:
    """The method's inputs from the files the user gave; a missing one is named with its option."""
    missing = [name for name in method.inputs if given.get(name) is None]
    if missing:
        raise InputProblem(f"{method.name} samples from {', '.join('--' + n for n in method.inputs)}: "
                           f"give {', '.join('--' + n for n in missing)}")
    for name, path in given.items():
        if path is not None and not Path(path).is_file():
            raise InputProblem(f"--{name} {path}: no such file")
    inputs = SampleInputs(fps=fps, recipe=recipe)
    if given.get("audio"):
        inputs.audio = load_audio(given["audio"])
    elif given.get("driving"):
        inputs.audio = load_audio(given["driving"])  # a driven video speaks with its driver's voice
    if given.get("reference"):
        inputs.reference = prepare_reference(given["reference"], recipe)
    if given.get("driving"):
        inputs.driving = prepare_driving(given["driving"], scratch, method.driving_asr)
    if given.get("lr"):
        inputs.lr, inputs.hr = prepare_lr(given["lr"], recipe)
    return inputs


def write_talking_video(path: Path, frames: torch.Tensor | np.ndarray, audio: np.ndarray, fps: float) -> None:
    """An H.264 MP4 of ``frames`` (tensor in [-1, 1] or uint8 NHWC) with ``audio`` (16 kHz) as AAC; odd sizes
    are padded by one edge pixel (yuv420p needs even ones)."""
    pixels = to_uint8(frames) if isinstance(frames, torch.Tensor) else np.asarray(frames, np.uint8)
    height, width = pixels.shape[1:3]
    pixels = np.pad(pixels, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    audio = np.asarray(audio, np.float32)[: int(round(len(pixels) / fps * SAMPLE_RATE))]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_video(Path(path), iter(pixels), audio, SAMPLE_RATE, (pixels.shape[2], pixels.shape[1]), fps)


def side_by_side(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """(T, H, 2W, 3): real frames left, generated right (for eval's videos)."""
    return np.concatenate([real, fake], axis=2)


def scratch_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="avmodels-sample-")
