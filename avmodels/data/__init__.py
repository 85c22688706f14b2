"""Stream shards (``avprep shard``) into torch: URLs -> WebDataset -> safe decode -> a method's view -> batches.

    dataset = make_dataset(shard_urls("shards/wav2pix", "train"), Wav2Pix.view, seed=0, resampled=True,
                           epoch_samples=100_000)
    for batch in Prefetcher(make_loader(dataset, batch_size=64, num_workers=8), "cuda"):
        ...

``stream.py``: shard URLs, the WebDataset pipeline, its node and worker slices, safe decoding. ``batches.py``: the
DataLoader, its shared-memory batches and the Prefetcher. A view returns named tensors (each method's ``view.py``
lists its own); the loader stacks them with a leading batch axis, ``key`` becomes a list of str, and every uint8
tensor (an image, channels-last in memory) arrives on the device as contiguous float32 in [-1, 1].
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from avmodels.data.batches import ARENAS_PER_WORKER, Prefetcher, make_loader, to_unit_range
from avmodels.data.stream import UnsafeMemberError, make_dataset, node_position, shard_urls, view_with

__all__ = ["ARENAS_PER_WORKER", "Prefetcher", "UnsafeMemberError", "make_dataset", "make_loader", "node_position",
           "shard_urls", "split_batches", "to_unit_range", "view_with"]


def split_batches(source: str | Path | Sequence[str], split: str | None, view: Callable, device: str | torch.device,
                  batch_size: int = 32, **view_options) -> Iterator[dict]:
    """Every sample of ``split`` once, in shard order, with the view's deterministic (centre) choices, on every
    rank of a DDP job alike: for evaluation and for statistics fitted before training (``Method.begin_stage``).
    ``view_options`` go to the view (e.g. ``images=False``)."""
    dataset = make_dataset(shard_urls(source, split), view_with(view, **view_options), train=False, whole=True)
    return iter(Prefetcher(make_loader(dataset, batch_size, num_workers=0), device))
