"""The toolkit methods' views are made of: a decoded shard sample's images, clips, arrays, identity and sound.

A view (``Method.view(sample, rng, **options) -> dict``, in each method's package) turns a sample whose members
come decoded, except its images (jpg, png: still bytes), into the named tensors its step reads. ``rng`` is a
seeded numpy Generator for training-time randomness, or None for the deterministic choice used in evaluation
(centre crops). Images stay uint8 so that batches cross to the GPU at a quarter of the float size; the Prefetcher
scales every uint8 tensor to [-1, 1] there and makes it contiguous. Their shape is 3 x H x W but their memory is
channels-last (H x W x 3, the decoders' order), so ``.view`` on them fails: use ``.reshape`` or ``.contiguous()``.
Every view also returns ``key`` (the sample key) and ``speaker`` (int64 index into dataset.json ``speakers``):
``identity(sample)``.
"""
from __future__ import annotations

import re
import struct

import cv2
import numpy as np
import simplejpeg
import torch

from avprep.features.timebase import fit_length
from avprep.media.audio import SAMPLE_RATE


def identity(sample: dict) -> dict:
    """``key`` and ``speaker``: what every view returns."""
    return {"key": sample["__key__"], "speaker": torch.tensor(sample["meta.json"]["speaker_index"], dtype=torch.int64)}


def clip_audio(sample: dict) -> dict:
    """The sound of the clip's frames (``audio``: from the first frame's time, as long as the clip) and ``fps``."""
    meta = sample["meta.json"]
    start = int(round(-meta["audio_start_s"] * SAMPLE_RATE))  # the first frame's time in the stored slice
    span = int(round(meta["n_frames"] / meta["fps"] * SAMPLE_RATE))
    return {"audio": torch.from_numpy(fit_length(sample["audio.flac"][max(start, 0):], span).astype(np.float32)),
            "fps": torch.tensor(meta["fps"], dtype=torch.float32)}


def array(values: np.ndarray) -> torch.Tensor:
    """A stored array as contiguous float32."""
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def clip(sample: dict, prefix: str, extension: str) -> torch.Tensor | EncodedImages:
    """``prefix000.ext``, ``prefix001.ext``, ... as T x 3 x H x W; T must be the sample's n_frames."""
    pattern = re.compile(rf"{prefix}\d{{3}}\.{extension}")
    names = sorted(name for name in sample if pattern.fullmatch(name))
    expected = sample["meta.json"]["n_frames"]
    if len(names) != expected:
        raise ValueError(f"{sample['__key__']}: {len(names)} {prefix}NNN.{extension} members, meta says {expected}")
    return images([sample[name] for name in names])


defer_image_decoding = False  # True in make_loader's workers, whose collate decodes images into the batch itself


def image(data: bytes) -> torch.Tensor | EncodedImages:
    """One encoded image as 3 x H x W uint8 (or still encoded, for the worker's collate to decode in place)."""
    encoded = EncodedImages([data], single=True)
    return encoded if defer_image_decoding else encoded.decode()


def images(data: list[bytes]) -> torch.Tensor | EncodedImages:
    """Encoded images of one size as N x 3 x H x W uint8 (or still encoded, as ``image``)."""
    encoded = EncodedImages(data, single=False)
    return encoded if defer_image_decoding else encoded.decode()


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
        sizes = {image_size(data) for data in encoded}  # headers read once, now: a damaged one fails in the view
        if len(sizes) > 1:
            raise ValueError(f"images of sizes {sorted(sizes)} in one clip: its images differ in size")
        [self.size] = sizes

    @property
    def storage_shape(self) -> tuple[int, ...]:
        """The shape in memory, (N x) H x W x 3: the images' one size."""
        size = (*self.size, 3)
        return size if self.single else (len(self.encoded), *size)

    def decode(self) -> torch.Tensor:
        out = np.empty(self.storage_shape, np.uint8)
        self.decode_into(out)
        return channels_first(torch.from_numpy(out))

    def decode_into(self, out: np.ndarray) -> None:
        """Decode into ``out`` of ``storage_shape`` (the images' one size, checked when they were given)."""
        for slot, data in zip(out[None] if self.single else out, self.encoded, strict=True):
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
