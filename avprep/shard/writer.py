"""Deterministic tar shards: fixed member order and metadata, so the same samples give the same bytes."""
from __future__ import annotations

import os
import tarfile
import uuid
from pathlib import Path
from typing import Iterable

from avprep.pipeline.arrays import TarAppender


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> int:
    """Write ``samples`` (key, {field: bytes}) to ``path`` atomically; return its size in bytes.

    Members are named ``<key>.<field>`` in the given order with mtime 0, uid/gid 0 and mode 0644: nothing
    about the machine or the moment leaks into the bytes. The tar is written under a hidden temporary name
    and renamed when complete, so a reader never sees half a shard.
    """
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with TarAppender(partial) as tar:
            for key, fields in samples:
                for field, data in fields.items():
                    tar.add(f"{key}.{field}", data)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path.stat().st_size


def tar_bytes(member_sizes: Iterable[int]) -> int:
    """Bytes that members of these sizes take in a tar written by ``write_tar``: a 512-byte header each, data
    padded to whole 512-byte blocks."""
    return sum(tarfile.BLOCKSIZE + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE for size in member_sizes)


def tar_file_bytes(member_bytes: int) -> int:
    """Size of the tar file holding ``member_bytes`` of members: two zero end blocks, padded to whole records."""
    return -(-(member_bytes + 2 * tarfile.BLOCKSIZE) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE
