"""Shards as a stream of viewed samples: URLs -> WebDataset pipeline -> safe decode -> a method's view.

Each rank of a DDP job reads its own slice of the shards (``rank::world_size``) and each DataLoader worker its
own slice of that; in training the shard order is shuffled alike everywhere first, so the slices partition the
split. Iterating the dataset again starts the next epoch (new shard and sample order, new random crops), all
derived from ``seed``: the same seed, rank and worker count give the same samples in the same order. Without
``resampled`` ranks see different sample counts (shards differ in size); DDP training wants ``resampled=True``
with ``epoch_samples``, which gives every rank exactly that many samples per epoch.

Only npy (``allow_pickle=False``), json, jpg/png and flac members are decoded; a pickle-like member
(pyd, pickle, pkl, pth, pt) raises ``UnsafeMemberError``.
"""
from __future__ import annotations

import functools
import io
import itertools
import json
import random
import sys
import zlib
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import soundfile
import torch
import webdataset as wds

from avprep.media.audio import SAMPLE_RATE
from avprep.shard.folder import ShardDir, is_url
from avprep.shard.tars import shard_samples

PICKLE_LIKE = frozenset({"pyd", "pickle", "pkl", "pth", "pt"})


class UnsafeMemberError(ValueError):
    """A shard member that would need unpickling to decode: it could run code, so it is refused."""


def shard_urls(source: str | Path | Sequence[str], split: str | None = None) -> list[str]:
    """The tar URLs of ``source``: a shard folder, local or at a URL (its dataset.json lists ``split``'s tars), a
    brace pattern (``shards/train-{000000..000003}.tar``), a list of paths, or ``pipe:`` / URLs of tars."""
    if not isinstance(source, (str, Path)):
        return [str(url) for url in source]
    folder_url = is_url(source) and not source.rstrip("/").endswith(".tar") and "{" not in source
    if not (folder_url or Path(source).is_dir()):
        return wds.shardlists.expand_urls(str(source))
    return ShardDir(source).urls(split or "")


def make_dataset(urls: str | Sequence[str], view: Callable[[dict, np.random.Generator | None], dict], *,
                 seed: int = 0, shuffle_buffer: int = 1000, resampled: bool = False,
                 epoch_samples: int | None = None, rank: int | None = None, world_size: int | None = None,
                 train: bool = True, whole: bool = False) -> ShardStream:
    """This rank's stream of viewed samples (see the module docstring).

    ``train=False`` reads shards in order, does not shuffle samples and takes the views' centre crops.
    ``epoch_samples`` (resampled mode only) is this rank's exact number of samples per epoch. ``whole``: every
    rank reads all the shards, not its share (evaluation; statistics every rank must fit alike).
    """
    if resampled != (epoch_samples is not None):
        raise ValueError("resampled mode needs epoch_samples (its stream is endless), and only it takes one")
    rank, world_size = (0, 1) if whole else node_position(rank, world_size)
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
        # samples skipped as undecodable: a slot per loader worker, in memory the workers share (no lock needed)
        self.damaged = torch.zeros(WORKER_SLOTS, dtype=torch.int64).share_memory_()
        self.append(self._shards)
        self.append(self._read)
        if shuffle_buffer > 1:
            self.append(self._shuffle)
        if epoch_samples is not None:
            self.append(self._take_share)
        self.append(self._skip_consumed)
        self.append(self._views)

    def __iter__(self):
        self.epoch += 1
        return super().__iter__()

    @property
    def skipped(self) -> int:
        """Damaged samples skipped so far, by every worker."""
        return int(self.damaged.sum())

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

    def _read(self, shards: Iterator[dict]) -> Iterator[dict]:
        """Each shard's samples; a shard that breaks off (truncated, a damaged header) gives its whole samples
        before the break and costs only the rest."""
        for shard in shards:
            try:
                yield from shard_samples(shard["url"])
            except ValueError as error:
                reason = str(error).removeprefix(f"{shard['url']}: ")
                skipped(self.damaged, shard["url"], "(the rest of the shard)", ValueError(reason))

    def _views(self, samples: Iterator[dict]) -> Iterator[dict]:
        """Each sample decoded and viewed. One that cannot be (a damaged member) is skipped with a warning and its
        place taken by the sample before it (or, at the start, the next): epochs keep their size and every rank
        its batch count, so resume stays exact and DDP ranks stay in step."""
        last, owed = None, 0
        for sample in samples:
            viewed, damage = self._viewed(sample)
            if damage is not None:
                skipped(self.damaged, sample.get("__url__"), sample.get("__key__"), damage)
                if last is None:
                    owed += 1
                else:
                    yield last
                continue
            for _ in range(owed + 1):
                yield viewed
            last, owed = viewed, 0

    def _viewed(self, sample: dict) -> tuple[dict | None, Exception | None]:
        """(the sample viewed, None), or (None, the damage that stopped it)."""
        try:
            decoded = decode_sample(sample)
        except UnsafeMemberError:
            raise
        except DAMAGE as error:
            return None, error
        try:
            return self.view(decoded, self._sample_rng(sample["__key__"])), None
        except ValueError as error:  # the view's own: an image that will not decode, a clip cut short
            return None, error

    def _sample_rng(self, key: str) -> np.random.Generator | None:
        """Per sample and epoch, so a sample's random crop does not depend on which worker reads it."""
        return np.random.default_rng([self.seed, self.epoch, zlib.crc32(key.encode())]) if self.train else None


DAMAGE = (ValueError, OSError, RuntimeError, EOFError)  # what bytes damaged in storage raise while decoding
# (soundfile's LibsndfileError is a RuntimeError); a pickle member is refused, never skipped; a view's KeyError
# or IndexError is a bug and stops the run


WORKER_SLOTS = 64


def skipped(counter: torch.Tensor, url: str | None, key: str | None, error: Exception) -> None:
    """Count a damaged sample (in this worker's slot of ``counter``) and say which, in one line."""
    counter[worker_position()[0] % len(counter)] += 1
    try:
        message = " ".join(str(error).split()) or type(error).__name__
    except Exception:  # noqa: BLE001 (libsndfile's errors can fail to say what they are)
        message = type(error).__name__
    print(f"warning: skipped a damaged sample: {url} {key}: {message}", file=sys.stderr, flush=True)


def worker_position() -> tuple[int, int]:
    """(worker id, worker count) inside a DataLoader worker, else (0, 1)."""
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


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


def view_with(view: Callable, **options) -> Callable[[dict, np.random.Generator | None], dict]:
    """A method's view with its options set (e.g. ATVGnet's ``images=False``)."""
    return functools.partial(view, **options) if options else view
