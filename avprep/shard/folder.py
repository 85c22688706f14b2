"""A shard folder as ``avprep shard`` writes it: ``dataset.json`` (its facts, splits and their tars), the tars and
``index.parquet``. What ``PrepDir`` is for a prep folder, for readers of shards: the loader, evaluations, validate."""
from __future__ import annotations

import json
from pathlib import Path

from avprep.shard.recipe import is_training_split
from avprep.shard.tars import read_file


def is_url(location: str | Path) -> bool:
    """A URL (``https://``, ``s3://``, ...) rather than a local path."""
    return isinstance(location, str) and "://" in location


class ShardDir:
    """A shard folder on disk, or at a URL (``https://host/shards/``, ``s3://bucket/shards``: read as the loader
    reads its tars)."""

    def __init__(self, path: str | Path):
        self.remote = is_url(path)
        self.path = str(path).rstrip("/") if self.remote else Path(path)
        listing = self.file("dataset.json")
        try:
            self.info = json.loads(read_file(listing) if self.remote else Path(listing).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no dataset.json here; make shards with `avprep shard PREP -o "
                                    f"{self.path} --recipe METHOD`") from None

    def file(self, name: str) -> str:
        """The path or URL of a file in the folder."""
        return f"{self.path}/{name}" if self.remote else str(self.path / name)

    @property
    def splits(self) -> dict[str, dict]:
        """Split name -> {samples, shards, ...} as dataset.json records them."""
        return self.info["splits"]

    def parts(self, split: str) -> list[str]:
        """The splits ``split`` names: one, or several joined by + (``train_a+train_b``), each checked."""
        names = split.split("+")
        unknown = [name for name in names if name not in self.splits]
        if unknown:
            raise ValueError(f"{self.path}: choose a split: {unknown[0]!r} is not one of {sorted(self.splits)} (or "
                             "several joined by +)")
        return names

    def urls(self, split: str) -> list[str]:
        """The tar paths of ``split``."""
        return [self.file(name) for part in self.parts(split) for name in self.splits[part]["shards"]]

    def samples(self, split: str) -> int:
        return sum(self.splits[part]["samples"] for part in self.parts(split))

    @property
    def training_split(self) -> str:
        """The training splits joined by + (``train``, or Ear-SR's ``train_a+train_b``): what evaluations train
        their probes and galleries on."""
        return "+".join(name for name in self.splits if is_training_split(name))

    def is_closed(self, split: str) -> bool:
        """Whether ``split`` holds held-out videos of training speakers (the recipe's closed-set splits)."""
        return split in self.info["recipe"].get("closed_splits", ())
