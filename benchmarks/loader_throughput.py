"""Loader throughput on real DAVS shards (25 frames of 256² JPEG per sample) against two references.

    python benchmarks/loader_throughput.py [--out benchmarks/results/loader.md]

In one run, on the same frames: (a) the bound, a tight loop that only decodes the JPEG bytes already in
memory; (b) avmodels.data (WebDataset shards -> view -> batches) with one DataLoader worker; (c) what the
official repositories do: one file per frame in folders, read and decoded per sample by a torch Dataset, with
one worker. Frames/s per worker in steady state (five epochs, worker start-up not counted).
"""
from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from _bench import publish
from avmodels.data import VIEWS, make_dataset, make_loader, shard_urls
from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import RunOptions, run_extract
from avprep.shard.recipe import load_recipe
from avprep.shard.run import run_shard
from avprep.synth.catalogue import make_demo_corpus


class FolderDataset(torch.utils.data.Dataset):
    """One folder per sample holding f000.jpg ... and mfcc.npy: the per-file layout of the research repos."""

    def __init__(self, folders: list[Path]):
        self.folders = folders

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, i: int) -> dict:
        folder = self.folders[i]
        frames = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB).transpose(2, 0, 1)
                  for p in sorted(folder.glob("f*.jpg"))]
        return {"frames": torch.from_numpy(np.stack(frames)), "mfcc": torch.from_numpy(np.load(folder / "mfcc.npy"))}


def shard_members(shards: Path) -> list[tuple[str, bytes]]:
    members = []
    for tar_path in sorted(shards.glob("train-*.tar")):
        with tarfile.open(tar_path) as tar:
            members += [(m.name, tar.extractfile(m).read()) for m in tar]
    return members


def timed_frames(iterator, frames_of) -> float:
    """Frames/s in steady state: the clock starts at the first item, so worker start-up is not counted."""
    iterator = iter(iterator)
    next(iterator)
    start, frames = time.perf_counter(), 0
    for item in iterator:
        frames += frames_of(item)
    return frames / (time.perf_counter() - start)


def epochs(loader, count: int):
    for _ in range(count):
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "loader.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_demo_corpus(tmp / "videos", speakers=4, clips_per_speaker=3, seconds=4.0, size=(640, 360))
        run_extract(discover([tmp / "videos"]), tmp / "prep", ExtractConfig(morphable=False), RunOptions(jobs=2))
        recipe = load_recipe("davs")
        run_shard(tmp / "prep", tmp / "shards", recipe, max_count=4, jobs=2)
        members = shard_members(tmp / "shards")
        jpegs = [data for name, data in members if name.endswith(".jpg")]
        for name, data in members:  # the per-file layout, from the very same bytes
            key, field = name.split(".", 1)
            (tmp / "files" / key).mkdir(parents=True, exist_ok=True)
            (tmp / "files" / key / field).write_bytes(data)
        bound = timed_frames(jpegs, lambda data: cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8),
                                                                           cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) is not None)
        frames_in = lambda batch: batch["frames"].shape[0] * batch["frames"].shape[1]
        rounds = []
        for _ in range(3):
            dataset = make_dataset(shard_urls(tmp / "shards", "train"), VIEWS["davs"], train=False)
            shards_fps = timed_frames(epochs(make_loader(dataset, batch_size=4, num_workers=1), 5), frames_in)
            folders = sorted(p for p in (tmp / "files").iterdir() if (p / "f000.jpg").exists())
            loader = torch.utils.data.DataLoader(FolderDataset(folders), batch_size=4, num_workers=1,
                                                 persistent_workers=True)
            rounds.append((shards_fps, timed_frames(epochs(loader, 5), frames_in)))
        shards_fps, folder_fps = (max(column) for column in zip(*rounds))
    rows = ["| reader (one worker) | frames/s | vs JPEG-decode bound |", "|---|---:|---:|",
            f"| bound: decode the JPEG bytes in a tight loop | {bound:,.0f} | 100% |",
            f"| avmodels.data from shards | {shards_fps:,.0f} | {100 * shards_fps / bound:.0f}% |",
            f"| per-file folder loader | {folder_fps:,.0f} | {100 * folder_fps / bound:.0f}% |",
            "", f"Shards / per-file: {shards_fps / folder_fps:.2f}x ({len(jpegs)} frames of 256², DAVS recipe)."]
    publish(rows, "Loader throughput, one worker", args.out)


if __name__ == "__main__":
    main()
