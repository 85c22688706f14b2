"""Stream shards (``avprep shard``) into torch: URLs -> WebDataset -> safe decode -> a method's view -> batches.

    urls = shard_urls("shards/wav2pix", "train")
    dataset = make_dataset(urls, VIEWS["wav2pix"], seed=0, resampled=True, epoch_samples=100_000)
    for batch in Prefetcher(make_loader(dataset, batch_size=64, num_workers=8), "cuda"):
        ...

Each rank of a DDP job reads its own slice of the shards (``rank::world_size``) and each DataLoader worker its
own slice of that; in training the shard order is shuffled alike everywhere first, so the slices partition the
split. Iterating the dataset again starts the next epoch (new shard and sample order, new random crops), all
derived from ``seed``: the same seed, rank and worker count give the same samples in the same order. Without
``resampled`` ranks see different sample counts (shards differ in size); DDP training wants ``resampled=True``
with ``epoch_samples``, which gives every rank exactly that many samples per epoch.

Only npy (``allow_pickle=False``), json, jpg/png and flac members are decoded; a pickle-like member
(pyd, pickle, pkl, pth, pt) raises ``UnsafeMemberError``.

View tensors per sample (the loader stacks them with a leading batch axis; T = the recipe's clip_frames; every
view also has ``key`` (str) and ``speaker`` (int64, index into dataset.json ``speakers``)):

    method   key             dtype    shape          notes
    wav2pix  image           uint8    3x128x128      image.jpg
             wrong           uint8    3x128x128      wrong.jpg, a face of another speaker
             audio           float32  16000          1 s of audio.flac: random crop in training, centre otherwise;
                                                     divided by max|x|, pre-emphasis 0.95
    atvgnet  reference       uint8    3x128x128      the example frame r (random in [3, 7]; 3 in evaluation)
             frames          uint8    16x3x128x128   the targets r+1 .. r+16 (no images with images=False)
             example_landmarks float32 68x2          landmarks.npy at r, crop pixels
             landmarks       float32  16x68x2        landmarks.npy of the targets
             mfcc            float32  16x28x12       mfcc.npy of the targets
             audio, fps      float32  16/fps s       with audio.flac: the audio from the first target's time
    davs     frames          uint8    Tx3x256x256    the clip (T = 25)
             mfcc            float32  Tx20x12
             label           int64                   the word (dataset.json labels)
             classified      int64    12             the frames the word classifier reads (every other one)
             generated, identity_start, reference_index  int64  the training draws (all 0 in evaluation)
             audio, fps      float32  T/fps s        with audio.flac: the clip's audio from its first frame
    headgan  frames          uint8    Tx3x256x256
             nmfc            uint8    Tx3x256x256    nmfc000.png ...
             reference       uint8    3x256x256      ref.jpg, another frame of the same track
             reference_nmfc  uint8    3x256x256      ref_nmfc.png, its NMFC render (shards that hold it)
             mouth           float32  Tx2            mouth.npy, crop pixels (shards that hold it)
             audio_features  float32  Tx300          84 statistics + 8 x 27 characters
             audio, fps      float32  samples        the clip's sound, 16 kHz (shards that hold it)
    ear_sr   hr              uint8    3x128x128      image.jpg
             lr              uint8    3x8x8          lr.png
             spectrogram     float32  1x257x257      avprep.features.spectrogram of the 4 s audio.flac, [-1, 1],
                                                    time x frequency (absent with the view's spectrogram=False)
             gender, age     str                     the --meta CSV's columns ("" where absent)

The uint8 image keys (``IMAGE_KEYS``) are channels-last in memory (a permuted view of ... x H x W x 3 pixels, as
the JPEG decoder writes them; ``.view`` fails on them, ``.reshape`` works); the Prefetcher turns them into
contiguous float32 in [-1, 1] on the training device.
"""
from __future__ import annotations

import functools

import io
import itertools
import json
import math
import os
import random
import weakref
import zlib
from pathlib import Path
from typing import Callable, Iterator, Sequence
from urllib.parse import urlparse

import numpy as np
import soundfile
import torch
import webdataset as wds

from avmodels import views
from avmodels.views import VIEWS
from avprep.media.audio import SAMPLE_RATE
from avprep.shard.recipe import is_training_split

__all__ = ["VIEWS", "IMAGE_KEYS", "UnsafeMemberError", "shard_urls", "make_dataset", "make_loader", "Prefetcher"]

PICKLE_LIKE = frozenset({"pyd", "pickle", "pkl", "pth", "pt"})
IMAGE_KEYS = frozenset({"image", "wrong", "frames", "nmfc", "reference", "reference_nmfc", "hr", "lr"})


class UnsafeMemberError(ValueError):
    """A shard member that would need unpickling to decode: it could run code, so it is refused."""


def shard_urls(source: str | Path | Sequence[str], split: str | None = None) -> list[str]:
    """The tar URLs of ``source``: a shard folder (its dataset.json lists ``split``'s tars), a brace pattern
    (``shards/train-{000000..000003}.tar``), a list of paths, or ``pipe:`` / fsspec-style URLs (passed on)."""
    if not isinstance(source, (str, Path)):
        return [str(url) for url in source]
    folder = Path(source)
    if not folder.is_dir():
        return wds.shardlists.expand_urls(str(source))
    splits = json.loads((folder / "dataset.json").read_text())["splits"]
    unknown = [name for name in (split or "").split("+") if name not in splits]
    if unknown:
        raise ValueError(f"{folder}: choose a split: {unknown[0]!r} is not one of {sorted(splits)} (or several "
                         "joined by +)")
    return [str(folder / name) for part in split.split("+") for name in splits[part]["shards"]]


def samples_in(info: dict, split: str) -> int:
    """Samples of a split named in dataset.json ``info``, or of several joined by + (``train_a+train_b``)."""
    return sum(info["splits"][part]["samples"] for part in split.split("+"))


def training_split(info: dict) -> str:
    """The training splits of the shards whose dataset.json is ``info``, joined by + (``train``, or Ear-SR's
    ``train_a+train_b``): what evaluations train their probes and galleries on."""
    return "+".join(name for name in info["splits"] if is_training_split(name))


def make_dataset(urls: str | Sequence[str], view: Callable[[dict, np.random.Generator | None], dict], *,
                 seed: int = 0, shuffle_buffer: int = 1000, resampled: bool = False,
                 epoch_samples: int | None = None, rank: int | None = None, world_size: int | None = None,
                 train: bool = True) -> ShardStream:
    """This rank's stream of viewed samples (see the module docstring).

    ``train=False`` reads shards in order, does not shuffle samples and takes the views' centre crops.
    ``epoch_samples`` (resampled mode only) is this rank's exact number of samples per epoch.
    """
    if resampled != (epoch_samples is not None):
        raise ValueError("resampled mode needs epoch_samples (its stream is endless), and only it takes one")
    rank, world_size = node_position(rank, world_size)
    return ShardStream(shard_urls(urls), view, seed=seed, shuffle_buffer=shuffle_buffer if train else 0,
                       resampled=resampled, epoch_samples=epoch_samples, rank=rank, world_size=world_size,
                       train=train)


def node_position(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world size): torch.distributed's when initialised, else the given ones, else a single node.

    Explicit on purpose: webdataset's own splitter reads RANK/WORLD_SIZE from the environment first.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        found = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if (rank, world_size) not in ((None, None), found):
            raise ValueError(f"rank {rank} of {world_size} given, but torch.distributed says {found[0]} of {found[1]}")
        return found
    if rank is None and world_size is None:
        return 0, 1
    if rank is None or world_size is None or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
    return rank, world_size


class ShardStream(wds.DataPipeline):
    """A WebDataset pipeline whose every random choice derives from (seed, epoch, rank, worker).

    Each ``iter()`` is the next epoch. In a DataLoader that holds only with persistent workers (make_loader
    keeps them), since a fresh worker starts from the main process's copy.
    """

    def __init__(self, urls: list[str], view: Callable, *, seed: int, shuffle_buffer: int, resampled: bool,
                 epoch_samples: int | None, rank: int, world_size: int, train: bool):
        super().__init__()
        if not urls:
            raise ValueError("no shard URLs")
        self.urls, self.view, self.seed, self.shuffle_buffer = urls, view, seed, shuffle_buffer
        self.resampled, self.epoch_samples, self.train = resampled, epoch_samples, train
        self.rank, self.world_size, self.epoch = rank, world_size, -1
        self.resume_epoch, self.resume_batches, self.batch_size = -1, 0, 1
        self.append(self._shards)
        self.append(read_tars)
        if shuffle_buffer > 1:
            self.append(self._shuffle)
        if epoch_samples is not None:
            self.append(self._take_share)
        self.append(self._skip_consumed)
        self.append(self._views)

    def __iter__(self):
        self.epoch += 1
        return super().__iter__()

    def resume(self, epoch: int, batches_done: int, batch_size: int) -> None:
        """Start at ``epoch`` after its first ``batches_done`` batches, as a loader of ``batch_size`` would.

        Call it before the loader's first iteration. The skipped samples are read from the tars but not decoded.
        Exact when every worker's share of the epoch is whole batches (the trainer sizes epochs so), because a
        DataLoader then takes batches from its workers strictly in turn.
        """
        self.epoch, self.resume_epoch = epoch - 1, epoch
        self.resume_batches, self.batch_size = batches_done, batch_size

    def _rng(self, purpose: str, *where: int) -> random.Random:
        return random.Random(":".join(map(str, (purpose, self.seed, self.epoch, *where))))

    def _shards(self) -> Iterator[dict]:
        """Resampled: endless draws per rank and worker. Otherwise this rank's and worker's slice of the list."""
        worker, workers = worker_position()
        if self.resampled:
            rng = self._rng("resample", self.rank, worker)
            while True:
                yield {"url": rng.choice(self.urls)}
        urls = list(self.urls)
        if self.train:
            self._rng("shards").shuffle(urls)  # alike on every rank and worker, so the slices partition it
        yield from ({"url": url} for url in urls[self.rank::self.world_size][worker::workers])

    def _shuffle(self, samples: Iterator[dict]) -> Iterator[dict]:
        rng = self._rng("samples", self.rank, *worker_position())
        return wds.shuffle(self.shuffle_buffer, rng=rng)(samples)

    def _take_share(self, samples: Iterator[dict]) -> Iterator[dict]:
        """This worker's share of epoch_samples, so that the rank's workers together yield exactly that many.

        (``DataPipeline.with_epoch(n)`` would count n per worker, n x num_workers per rank.)
        """
        worker, workers = worker_position()
        share = self.epoch_samples // workers + (worker < self.epoch_samples % workers)
        return itertools.islice(samples, share)

    def _skip_consumed(self, samples: Iterator[dict]) -> Iterator[dict]:
        if self.epoch != self.resume_epoch or not self.resume_batches:
            return samples
        worker, workers = worker_position()
        consumed = len(range(worker, self.resume_batches, workers)) * self.batch_size
        return itertools.islice(samples, consumed, None)

    def _views(self, samples: Iterator[dict]) -> Iterator[dict]:
        for sample in samples:
            yield self.view(decode_sample(sample), self._sample_rng(sample["__key__"]))

    def _sample_rng(self, key: str) -> np.random.Generator | None:
        """Per sample and epoch, so a sample's random crop does not depend on which worker reads it."""
        return np.random.default_rng([self.seed, self.epoch, zlib.crc32(key.encode())]) if self.train else None


def worker_position() -> tuple[int, int]:
    """(worker id, worker count) inside a DataLoader worker, else (0, 1)."""
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def read_tars(shards: Iterator[dict]) -> Iterator[dict]:
    """Each tar's members grouped into samples as webdataset groups them: consecutive members named
    ``<key>.<field>`` (key up to the basename's first dot, field lower-cased) make one sample, plus ``__key__``
    and ``__url__``. Read with ``tar_members``, not tarfile: its stream mode spends ~100 us per member, a quarter of
    decoding a 256² JPEG."""
    for shard in shards:
        url, sample = shard["url"], None
        with open_shard(url) as stream:
            for name, data in tar_members(stream, url):
                stem_at = name.rfind("/") + 1
                dot = name.find(".", stem_at)
                if dot <= stem_at:
                    continue  # no extension: not part of a sample
                key, field = name[:dot], name[dot + 1:].lower()
                if sample is None or key != sample["__key__"]:
                    if sample is not None:
                        yield sample
                    sample = {"__key__": key, "__url__": url}
                elif field in sample:
                    raise ValueError(f"{url}: member {name} appears twice")
                sample[field] = data
        if sample is not None:
            yield sample


def open_shard(url: str):
    """A readable binary stream of one shard: local files directly (a 1 MiB buffer where gopen's is 8 KiB: fewer
    calls), ``pipe:`` commands through webdataset, any other ``scheme://`` URL (s3, gs, hf, http, memory, ...)
    through fsspec when it knows the scheme."""
    if os.path.isfile(url):
        stream = open(url, "rb", buffering=1 << 20)
        return _ReadAhead(stream) if hasattr(os, "posix_fadvise") else stream
    scheme = urlparse(url).scheme
    if scheme and scheme != "pipe" and "://" in url:
        import fsspec

        if scheme in fsspec.available_protocols():
            return fsspec.open(url, "rb").open()
    return wds.gopen(url)


class _ReadAhead:
    """A local shard read front to back, with the kernel asked (``POSIX_FADV_WILLNEED``) to fetch the next
    ``window`` bytes while the current ones are decoded: from a cold cache, reads then rarely wait on the disk
    (its own readahead, 128 KiB, is smaller than one 1 MiB buffered read)."""

    def __init__(self, stream, window: int = 32 << 20):
        self.stream, self.window, self.position, self.fetched = stream, window, 0, 0

    def read(self, size: int) -> bytes:
        if self.position + self.window // 2 >= self.fetched:
            os.posix_fadvise(self.stream.fileno(), self.fetched, self.window, os.POSIX_FADV_WILLNEED)
            self.fetched += self.window
        data = self.stream.read(size)
        self.position += len(data)
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()


def tar_members(stream, url: str) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular file in a ustar, GNU or pax tar stream; long names are followed."""
    long_name, members, padding = None, 0, 0
    while True:
        header = stream.read(padding + 512)[padding:]  # the last member's padding and this header: one call
        if not header.strip(b"\0"):
            if not header and not members:
                raise ValueError(f"{url}: empty file, not a tar")
            return  # the end-of-archive block (or a stream that stops between members, as tarfile allows)
        members += 1
        if len(header) < 512 or not _checksum_matches(header, url):
            raise ValueError(f"{url}: not a tar, or truncated")
        size, kind = _octal(header[124:136], url), header[156:157]
        data = stream.read(size)
        if len(data) < size:
            raise ValueError(f"{url}: truncated in a member")
        padding = -size % 512
        if kind == b"L":  # GNU: the next member's name
            long_name = data.rstrip(b"\0").decode()
        elif kind == b"x":  # pax: the next member's attributes, its path among them
            long_name = _pax_path(data) or long_name
        elif kind in (b"0", b"\0", b"7"):
            yield long_name or _header_name(header), data
            long_name = None
        elif kind != b"g":
            long_name = None  # a folder, link or device: no data to yield


def _checksum_matches(header: bytes, url: str) -> bool:
    """tar's checksum is the header's byte sum with the checksum field read as spaces. zlib's adler32 holds that
    sum + 1 modulo 65521 in its low half, computed in C: a sixth of the time of ``sum`` over 512 bytes."""
    field = header[148:156]
    return zlib.adler32(header) & 0xFFFF == (1 + _octal(field, url) + sum(field) - 8 * ord(" ")) % 65521


def _octal(field: bytes, url: str) -> int:
    try:
        return int(field.strip(b" \0") or b"0", 8)
    except ValueError:
        raise ValueError(f"{url}: not a tar, or corrupt") from None


def _header_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0].decode()
    if header[257:265] == b"ustar\x0000" and header[345] != 0:  # POSIX ustar: names may be split at a slash
        return header[345:500].split(b"\0", 1)[0].decode() + "/" + name
    return name


def _pax_path(records: bytes) -> str | None:
    """The ``path`` of pax records ``<length> <key>=<value>\\n``."""
    while records:
        length = int(records.split(b" ", 1)[0])
        key, _, value = records[:length].split(b" ", 1)[1].partition(b"=")
        if key == b"path":
            return value[:-1].decode()
        records = records[length:]
    return None


def decode_sample(sample: dict) -> dict:
    """Decode every member by its last extension but images (the view decodes those); ``__key__`` and
    ``__url__`` pass through."""
    decoded = {}
    for field, value in sample.items():
        extension = field.rsplit(".", 1)[-1]
        if field.startswith("__"):
            decoded[field] = value
        elif extension in PICKLE_LIKE:
            raise UnsafeMemberError(f"{sample.get('__url__')}: member {sample['__key__']}.{field} is .{extension}, "
                                    "a pickle: refused (shards hold only npy, json, jpg, png and flac)")
        elif extension in DECODERS:
            decoded[field] = DECODERS[extension](value)
        else:
            raise ValueError(f"{sample.get('__url__')}: member {sample['__key__']}.{field}: unknown extension "
                             f".{extension} (shards hold only npy, json, jpg, png and flac)")
    return decoded


def _decode_audio(data: bytes) -> np.ndarray:
    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    if rate != SAMPLE_RATE or audio.ndim != 1:
        raise ValueError(f"audio must be {SAMPLE_RATE} Hz mono, got {rate} Hz with shape {audio.shape}")
    return audio


DECODERS = {
    "jpg": bytes,  # decoded by the view, straight into its tensor
    "png": bytes,
    "npy": lambda data: np.load(io.BytesIO(data), allow_pickle=False),
    "flac": _decode_audio,
    "json": json.loads,
}


def make_loader(dataset: ShardStream, batch_size: int, num_workers: int,
                pin_memory: bool | None = None) -> torch.utils.data.DataLoader:
    """Batches of stacked tensors (uint8 stays uint8 on the host; ``key`` becomes a list of str).

    Workers persist across epochs so that the dataset's epoch counter advances in them. Memory is pinned when
    CUDA is available unless ``pin_memory`` says otherwise; a rank's last batch per worker may be partial. The
    loader seeds its workers from its own generator, not torch's global one, so that starting it does not move
    the training RNG (a resumed run must draw the same dropout masks as an uninterrupted one). A worker decodes
    images straight into the batch, in one of a few shared-memory arenas it reuses (``SharedBatch``): a batch's
    tensors view its arena until the last of them is freed, so holding more than ``ARENAS_PER_WORKER`` batches
    per worker is safe, only slower (the worker then takes fresh memory).
    """
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory, collate_fn=collate,
        worker_init_fn=_defer_image_decoding, generator=torch.Generator().manual_seed(0))


def _defer_image_decoding(worker: int) -> None:
    views.defer_image_decoding = True


def collate(samples: list[dict]) -> dict | SharedBatch:
    """Each tensor of the samples stacked once: in a DataLoader worker into a recycled shared-memory arena
    (``SharedBatch``), elsewhere into ordinary memory. Other values as torch collates them (str -> list)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.utils.data.default_collate(samples)
    return SharedBatch(samples)


ARENAS_PER_WORKER = 4  # the two batches a worker has queued (prefetch_factor), the one in use, one being pinned
ARENA_ALIGN = 64
_arenas: list[torch.Tensor] = []  # this worker's; byte 0 of each is 1 while the main process holds its batch


class SharedBatch:
    """A batch on its way from a worker to the main process, packed into one of the worker's arenas.

    Fresh shared memory, which torch's own collate takes for every batch, pays a page fault per 4 KiB on its
    first write: on the benchmark machine as much as a third of decoding the frames. So a worker reuses a few
    arenas. The main process unpacks a batch into tensors viewing the arena and, once the last of them is freed,
    clears the arena's busy byte for the worker. The tensors are plain, not shared: passing one on to another
    process copies it instead of handing over memory the worker will overwrite.
    """

    def __init__(self, samples: list[dict]):
        self.keys, self.fields, size = list(samples[0]), [], ARENA_ALIGN
        for key, value in samples[0].items():
            encoded = isinstance(value, views.EncodedImages)
            if torch.is_tensor(value) or encoded:
                shape = (len(samples), *(value.storage_shape if encoded else value.shape))
                self.fields.append((key, value.dtype, shape, size, encoded))
                size += -(-math.prod(shape) * value.dtype.itemsize // ARENA_ALIGN) * ARENA_ALIGN
        self.arena = _free_arena(size)
        self.arena[0] = 1
        for key, dtype, shape, start, encoded in self.fields:
            out = _field(self.arena, dtype, shape, start)
            if encoded:
                for slot, sample in zip(out.numpy(), samples):
                    sample[key].decode_into(slot)
            else:
                torch.stack([sample[key] for sample in samples], out=out)
        stacked = {key for key, *_ in self.fields}
        self.others = {key: torch.utils.data.default_collate([sample[key] for sample in samples])
                       for key in self.keys if key not in stacked}

    def __reduce__(self):
        return _unpack, (self.arena, self.fields, self.others, self.keys)


def _free_arena(size: int) -> torch.Tensor:
    """An arena of at least ``size`` bytes that the main process has given back, else a new one (pooled while
    the pool has room or holds a free arena too small for this batch)."""
    free = [i for i, arena in enumerate(_arenas) if arena[0] == 0]
    for i in free:
        if len(_arenas[i]) >= size:
            return _arenas[i]
    arena = torch.empty(size, dtype=torch.uint8).share_memory_()
    if free:
        _arenas[free[0]] = arena
    elif len(_arenas) < ARENAS_PER_WORKER:
        _arenas.append(arena)
    return arena


def _field(arena: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...], start: int) -> torch.Tensor:
    return arena[start:start + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)


def _unpack(arena: torch.Tensor, fields: list, others: dict, keys: list[str]) -> dict:
    """In the main process: the batch as tensors viewing ``arena``; freeing the last one frees the arena."""
    body = arena.numpy()
    weakref.finalize(body, arena.__setitem__, 0, 0)
    base = torch.from_numpy(body)
    stacked = {key: views.channels_first(_field(base, dtype, shape, start)) if encoded
               else _field(base, dtype, shape, start) for key, dtype, shape, start, encoded in fields}
    return {key: stacked[key] if key in stacked else others[key] for key in keys}


def to_unit_range(batch: dict) -> dict:
    """uint8 images (``IMAGE_KEYS``, channels-last in memory) -> contiguous float32 in [-1, 1], converted and
    reordered in one pass; everything else unchanged."""
    return {key: value.to(torch.float32, memory_format=torch.contiguous_format).div_(127.5).sub_(1.0)
            if key in IMAGE_KEYS else value for key, value in batch.items()}


class Prefetcher:
    """Batches on ``device`` with images in [-1, 1], the next one uploaded while the current one is used.

    On CUDA the copy (non_blocking, from pinned memory) and the uint8 -> float conversion run on a side stream,
    so the host sends a quarter of the bytes and the GPU does the arithmetic; the training stream waits on an
    event for that batch only. Elsewhere the same happens inline.
    """

    def __init__(self, loader, device: str | torch.device):
        self.loader, self.device = loader, torch.device(device)

    def __iter__(self) -> Iterator[dict]:
        if self.device.type != "cuda":
            return (self._prepare(batch) for batch in self.loader)
        return self._cuda_batches()

    def _prepare(self, batch: dict) -> dict:
        return to_unit_range({key: value.to(self.device, non_blocking=True) if torch.is_tensor(value) else value
                              for key, value in batch.items()})

    def _cuda_batches(self) -> Iterator[dict]:
        side = torch.cuda.Stream(self.device)
        pending = None
        for batch in self.loader:
            with torch.cuda.stream(side):
                uploaded = self._prepare(batch), side.record_event()
            if pending is not None:
                yield self._ready(*pending)
            pending = uploaded
        if pending is not None:
            yield self._ready(*pending)

    def _ready(self, batch: dict, uploaded: torch.cuda.Event) -> dict:
        current = torch.cuda.current_stream(self.device)
        current.wait_event(uploaded)
        for value in batch.values():
            if torch.is_tensor(value):
                value.record_stream(current)  # memory made on the side stream is in use on this one now
        return batch


def view_with(name: str, **options) -> Callable[[dict, np.random.Generator | None], dict]:
    """The view ``name`` with its options set (e.g. ATVGnet's ``images=False``)."""
    return functools.partial(VIEWS[name], **options) if options else VIEWS[name]


def split_batches(source: str | Path | Sequence[str], split: str | None, view: str, device: str | torch.device,
                  batch_size: int = 32, **view_options) -> Iterator[dict]:
    """Every sample of ``split`` once, in shard order, with the views' deterministic (centre) choices: for
    evaluation. ``view_options`` go to the view (e.g. ``images=False``)."""
    dataset = make_dataset(shard_urls(source, split), view_with(view, **view_options), train=False)
    return iter(Prefetcher(make_loader(dataset, batch_size, num_workers=0), device))
