"""Batches of viewed samples: stacked in DataLoader workers straight into reused shared memory, then moved to the
training device with images scaled to [-1, 1] (on CUDA on a side stream, while the previous batch is used)."""
from __future__ import annotations

import functools
import math
import weakref
from typing import Iterator

import torch

from avmodels import views
from avmodels.data.stream import ShardStream, skipped


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
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        collate_fn=functools.partial(collate, damaged=dataset.damaged),
        worker_init_fn=_defer_image_decoding, generator=torch.Generator().manual_seed(0))


def _defer_image_decoding(worker: int) -> None:
    views.defer_image_decoding = True


class BatchError(ValueError):
    """Samples that cannot be stacked into one batch: the field, its shapes and the samples' keys, in one line."""


def collate(samples: list[dict], damaged=None) -> dict | SharedBatch:
    """Each tensor of the samples stacked once: in a DataLoader worker into a recycled shared-memory arena
    (``SharedBatch``, where a sample whose image will not decode is replaced and counted in ``damaged``),
    elsewhere into ordinary memory. Other values as torch collates them (str -> list)."""
    _check_shapes(samples)
    if torch.utils.data.get_worker_info() is None:
        return torch.utils.data.default_collate(samples)
    return SharedBatch(samples, damaged)


def _check_shapes(samples: list[dict]) -> None:
    for field, value in samples[0].items():
        if not (torch.is_tensor(value) or isinstance(value, views.EncodedImages)):
            continue
        shapes = [tuple(sample[field].storage_shape if isinstance(sample[field], views.EncodedImages)
                        else sample[field].shape) for sample in samples]
        if len(set(shapes)) > 1:
            odd = [f"{sample.get('key', '?')} {list(shape)}" for sample, shape in zip(samples, shapes)
                   if shape != shapes[0]]
            raise BatchError(f"cannot batch field {field!r}: {samples[0].get('key', '?')} has {list(shapes[0])}, "
                             f"but {', '.join(odd[:3])}{' ...' if len(odd) > 3 else ''}; every sample of a split "
                             "must have the shapes dataset.json declares (check with `avprep validate`)")


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

    def __init__(self, samples: list[dict], damaged=None):
        self.keys, self.fields, size = list(samples[0]), [], ARENA_ALIGN
        damaged_rows: list[int] = []  # samples whose images would not decode: replaced by a neighbour
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
                for row, (slot, sample) in enumerate(zip(out.numpy(), samples)):
                    try:
                        sample[key].decode_into(slot)
                    except ValueError as error:
                        if row not in damaged_rows:
                            damaged_rows.append(row)
                            if damaged is not None:
                                skipped(damaged, None, sample.get("key"), error)
            else:
                torch.stack([sample[key] for sample in samples], out=out)
        if damaged_rows:
            samples = self._replace_rows(samples, damaged_rows)
        stacked = {key for key, *_ in self.fields}
        self.others = {key: torch.utils.data.default_collate([sample[key] for sample in samples])
                       for key in self.keys if key not in stacked}

    def _replace_rows(self, samples: list[dict], rows: list[int]) -> list[dict]:
        """Rows whose images would not decode take the sample before them (or the first good one), so the batch
        keeps its size, as the stream keeps its epochs'."""
        good = [row for row in range(len(samples)) if row not in rows]
        if not good:
            raise ValueError("every sample of the batch is damaged")
        samples = list(samples)
        for row in rows:
            source = max((g for g in good if g < row), default=good[0])
            for _, dtype, shape, start, _ in self.fields:
                field = _field(self.arena, dtype, shape, start)
                field[row] = field[source]
            samples[row] = samples[source]
        return samples

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
    """uint8 tensors (images, channels-last in memory) -> contiguous float32 in [-1, 1], converted and reordered
    in one pass; everything else unchanged."""
    return {key: value.to(torch.float32, memory_format=torch.contiguous_format).div_(127.5).sub_(1.0)
            if torch.is_tensor(value) and value.dtype == torch.uint8 else value for key, value in batch.items()}


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
