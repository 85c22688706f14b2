"""Each method's view of a decoded sample: the named tensors its training step reads (shapes: ``avmodels.data``).

A view is ``view(sample, rng) -> dict``. The sample's members come decoded except its images (jpg, png), which
are still bytes: the view decodes them straight into its tensors. ``rng`` is a seeded numpy Generator for
training-time randomness, or None for the deterministic choice used in evaluation (centre crops). Images stay
uint8 here so that batches cross to the GPU at a quarter of the float size; the Prefetcher scales them to
[-1, 1] there and makes them contiguous. Their shape is 3 x H x W but their memory is channels-last (H x W x 3,
the decoders' order), so ``.view`` on them fails: use ``.reshape`` or ``.contiguous()``. Every view also returns
``key`` (the sample key) and ``speaker`` (int64 index into dataset.json ``speakers``).
"""
from __future__ import annotations

import re
import struct

import cv2
import numpy as np
import simplejpeg
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


ATVGNET_TARGETS = 16  # frames generated per clip
ATVGNET_EXAMPLES = (3, 7)  # the example (reference) frame's index range in a clip, as the official loader draws it


def atvgnet(sample: dict, rng: np.random.Generator | None, images: bool = True) -> dict:
    """ATVGnet's clip: an example frame r (random in [3, 7] in training, 3 in evaluation) and the 16 target
    frames after it, each with its 68 landmarks (crop pixels) and MFCC window; with ``images`` the example image
    (``reference``) and the targets' images (``frames``). The audio, when the shards hold it, starts at the first
    target frame's time (``audio``, 16 kHz)."""
    landmarks = sample["landmarks.npy"].astype(np.float32)
    frames = len(landmarks)
    last = min(ATVGNET_EXAMPLES[1], frames - ATVGNET_TARGETS - 1)
    if last < ATVGNET_EXAMPLES[0]:
        raise ValueError(f"{sample['__key__']}: ATVGnet needs clips of at least {ATVGNET_EXAMPLES[0] + 17} frames, "
                         f"got {frames}")
    example = int(rng.integers(ATVGNET_EXAMPLES[0], last + 1)) if rng is not None else ATVGNET_EXAMPLES[0]
    targets = slice(example + 1, example + 1 + ATVGNET_TARGETS)
    out = {**_identity(sample), "example_landmarks": torch.from_numpy(landmarks[example]),
           "landmarks": torch.from_numpy(landmarks[targets]), "mfcc": _array(sample["mfcc.npy"][targets])}
    if "audio.flac" in sample:
        meta = sample["meta.json"]
        start = int(round(((example + 1) / meta["fps"] - meta["audio_start_s"]) * SAMPLE_RATE))
        span = int(round(ATVGNET_TARGETS / meta["fps"] * SAMPLE_RATE))
        out["audio"] = torch.from_numpy(fit_length(sample["audio.flac"][max(start, 0):], span).astype(np.float32))
        out["fps"] = torch.tensor(meta["fps"], dtype=torch.float32)
    if images:
        out["reference"] = _image(sample[f"f{example:03d}.jpg"])
        out["frames"] = _images(EncodedImages([sample[f"f{i:03d}.jpg"] for i in range(targets.start, targets.stop)],
                                              single=False))
    return out


DAVS_CLASSIFIED = 12  # frames the word classifier reads: every other frame from frame 0 or 1 (``pred_length``)
DAVS_GENERATED = 6  # consecutive classified frames generated in a training step (``sequence_length``)
DAVS_IDENTITY = 20  # consecutive frames whose person-id features the identity discriminator reads (``disfc_length``)


def davs(sample: dict, rng: np.random.Generator | None) -> dict:
    """DAVS's clip: every frame (``frames``, ``mfcc``), the word label, and the official loader's draws as
    indices into the clip: the 12 classified frames (``classified``: every other frame from frame 0 or 1), where
    the 6 generated ones start among them (``generated``), the first of the 20 consecutive frames
    the identity discriminator reads (``identity_start``) and the reference frame (``reference_index``).
    Evaluation (no ``rng``) takes frame 0 for every draw. The audio, when the shards hold it, is the clip's."""
    meta = sample["meta.json"]
    if meta.get("label_index") is None:
        raise ValueError(f"{sample['__key__']}: DAVS trains on word labels and this clip has none (shard an LRW "
                         "tree, or give extract a --meta CSV with a 'label' column)")
    frames = meta["n_frames"]
    if frames < max(2 * DAVS_CLASSIFIED, DAVS_IDENTITY):
        raise ValueError(f"{sample['__key__']}: DAVS needs clips of at least {2 * DAVS_CLASSIFIED} frames, got {frames}")
    draw = (lambda high: int(rng.integers(high))) if rng is not None else (lambda high: 0)
    phase = draw(frames - 2 * DAVS_CLASSIFIED + 1)
    out = {**_identity(sample), "frames": _clip(sample, "f", "jpg"), "mfcc": _array(sample["mfcc.npy"]),
           "label": torch.tensor(meta["label_index"], dtype=torch.int64),
           "classified": torch.arange(phase, phase + 2 * DAVS_CLASSIFIED, 2),
           "generated": torch.tensor(draw(DAVS_CLASSIFIED - DAVS_GENERATED + 1)),
           "identity_start": torch.tensor(draw(frames - DAVS_IDENTITY + 1)),
           "reference_index": torch.tensor(draw(frames))}
    if "audio.flac" in sample:
        out.update(_clip_audio(sample))
    return out


def headgan(sample: dict, rng: np.random.Generator | None) -> dict:
    """HeadGAN's clip: frames, their NMFC renders and audio features, the reference and (in shards that hold
    them) its NMFC render (``reference_nmfc``), the mouth centres in crop pixels (``mouth``, T x 2) and the
    clip's sound (``audio``)."""
    out = {**_identity(sample), "frames": _clip(sample, "f", "jpg"), "nmfc": _clip(sample, "nmfc", "png"),
           "reference": _image(sample["ref.jpg"]), "audio_features": _array(sample["audio_features.npy"])}
    if "ref_nmfc.png" in sample:
        out["reference_nmfc"] = _image(sample["ref_nmfc.png"])
    if "mouth.npy" in sample:
        out["mouth"] = _array(sample["mouth.npy"])
    if "audio.flac" in sample:
        out.update(_clip_audio(sample))
    return out


def _clip_audio(sample: dict) -> dict:
    """The sound of the clip's frames (``audio``: from the first frame's time, as long as the clip) and ``fps``."""
    meta = sample["meta.json"]
    start = int(round(-meta["audio_start_s"] * SAMPLE_RATE))  # the first frame's time in the stored slice
    span = int(round(meta["n_frames"] / meta["fps"] * SAMPLE_RATE))
    return {"audio": torch.from_numpy(fit_length(sample["audio.flac"][max(start, 0):], span).astype(np.float32)),
            "fps": torch.tensor(meta["fps"], dtype=torch.float32)}


EARSR_ATTRIBUTES = ("gender", "age")  # what the paper's classifiers name, where a --meta CSV gave them


def ear_sr(sample: dict, rng: np.random.Generator | None, spectrogram: bool = True) -> dict:
    """Ear-SR's sample: the face, its 8 x 8 copy, its ``gender`` and ``age`` as the extract's --meta CSV gave
    them ("" where absent) and, with ``spectrogram``, that of its 4 s of audio (most of the view's time: the
    stages that hear no audio turn it off)."""
    meta = sample["meta.json"]
    out = {**_identity(sample), "hr": _image(sample["image.jpg"]), "lr": _image(sample["lr.png"]),
           **{name: str(meta.get(name) or "") for name in EARSR_ATTRIBUTES}}
    if spectrogram:
        out["spectrogram"] = torch.from_numpy(earsr_spectrogram(sample["audio.flac"]).values[None].astype(np.float32))
    return out


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


defer_image_decoding = False  # True in make_loader's workers, whose collate decodes images into the batch itself


def _image(data: bytes) -> torch.Tensor | EncodedImages:
    return _images(EncodedImages([data], single=True))


def _images(images: EncodedImages) -> torch.Tensor | EncodedImages:
    return images if defer_image_decoding else images.decode()


class EncodedImages:
    """Images of one size still encoded, and their decoding to uint8 RGB 3 x H x W (``single``) or N x 3 x H x W.

    The tensors are channels-last in memory: a permuted view of H x W x 3 pixels, as the decoders write them.
    Decoding a JPEG straight into its place in the batch (simplejpeg's ``buffer``), with no intermediate image and
    no planar copy, measured as fast as decoding it alone, where cv2's decode then a split into CHW planes cost a
    quarter more (benchmarks/loader_throughput.py). make_loader's workers pass the batch's memory as the destination.
    """

    dtype = torch.uint8

    def __init__(self, encoded: list[bytes], single: bool):
        self.encoded, self.single = encoded, single

    @property
    def storage_shape(self) -> tuple[int, ...]:
        """The shape in memory, (N x) H x W x 3: the first image's size, read from its header."""
        size = (*image_size(self.encoded[0]), 3)
        return size if self.single else (len(self.encoded), *size)

    def decode(self) -> torch.Tensor:
        out = np.empty(self.storage_shape, np.uint8)
        self.decode_into(out)
        return channels_first(torch.from_numpy(out))

    def decode_into(self, out: np.ndarray) -> None:
        """Decode into ``out`` of ``storage_shape``; every image must have the first one's size."""
        for slot, data in zip(out[None] if self.single else out, self.encoded, strict=True):
            if (size := image_size(data)) != slot.shape[:2]:
                raise ValueError(f"an image of {size[1]}x{size[0]} where {slot.shape[1]}x{slot.shape[0]} was "
                                 "expected: a clip's or batch's images differ in size")
            if data[:2] == JPEG_START:
                simplejpeg.decode_jpeg(data, "RGB", buffer=slot)
            else:
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
                if image is None:
                    raise ValueError("not a decodable image")
                slot[...] = image


def channels_first(images: torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) pixels as a (..., 3, H, W) view: the same memory, channels-last."""
    return images.movedim(-1, -3)


JPEG_START, PNG_SIGNATURE = b"\xff\xd8", b"\x89PNG\r\n\x1a\n"


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) of a JPEG or PNG from its header, without decoding it."""
    if data[:2] == JPEG_START:
        try:
            return tuple(simplejpeg.decode_jpeg_header(data)[:2])
        except ValueError as error:
            raise ValueError(f"not a decodable JPEG: {error}") from None
    if data[:8] == PNG_SIGNATURE and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    raise ValueError("not a decodable image (shards hold JPEG and PNG images)")


def _array(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _clip(sample: dict, prefix: str, extension: str) -> torch.Tensor | EncodedImages:
    """``prefix000.ext``, ``prefix001.ext``, ... as T x 3 x H x W; T must be the sample's n_frames."""
    pattern = re.compile(rf"{prefix}\d{{3}}\.{extension}")
    names = sorted(name for name in sample if pattern.fullmatch(name))
    expected = sample["meta.json"]["n_frames"]
    if len(names) != expected:
        raise ValueError(f"{sample['__key__']}: {len(names)} {prefix}NNN.{extension} members, meta says {expected}")
    return _images(EncodedImages([sample[name] for name in names], single=False))
