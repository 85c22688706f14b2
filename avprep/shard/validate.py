"""``avprep validate``: read every shard end to end and check it against index.parquet and dataset.json."""
from __future__ import annotations

import collections
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import soundfile

from avprep.shard.folder import ShardDir
from avprep.shard.tars import shard_samples


def validate_shards(folder: str | Path) -> tuple[dict[str, int], list[str]]:
    """(samples per shard, problems). A problem is one line naming the shard and what is wrong."""
    folder = Path(folder)
    try:
        dataset = ShardDir(folder).info
        index = pq.read_table(folder / "index.parquet", columns=["key", "shard"]).to_pydict()
    except (OSError, ValueError) as error:
        return {}, [f"{folder}: no readable dataset.json and index.parquet ({error})"]
    expected = collections.Counter(index["shard"])
    schema = dataset["fields"]
    counts, problems = {}, []
    for split in dataset["splits"].values():
        for name in split["shards"]:
            count, found = _check_shard(folder / name, schema)
            counts[name] = count
            problems += found
            if not found and count != expected[name]:
                problems.append(f"{name}: {count} samples, index.parquet says {expected[name]}")
    return counts, problems


def _check_shard(path: Path, schema: dict[str, dict]) -> tuple[int, list[str]]:
    samples: dict[str, set[str]] = collections.defaultdict(set)
    problems: list[str] = []
    try:
        for sample in shard_samples(str(path), whole=True):
            key = sample.pop("__key__")
            del sample["__url__"]
            samples[key].update(sample)
            for field, data in sample.items():
                problem = _check_field(field, data, schema)
                if problem:
                    problems.append(f"{path.name}: {key}.{field}: {problem}")
    except (ValueError, OSError) as error:
        reason = str(error).removeprefix(f"{path}: ")
        return len(samples), [f"{path.name}: unreadable or truncated ({reason})"]
    for key, fields in samples.items():
        if fields != set(schema):
            missing, extra = sorted(set(schema) - fields), sorted(fields - set(schema))
            problems.append(f"{path.name}: {key}: missing {missing}, unexpected {extra}")
    return len(samples), problems


def _check_field(field: str, data: bytes, schema: dict[str, dict]) -> str | None:
    """Decode one member and compare it with its schema entry; None when it matches."""
    spec = schema.get(field)
    if spec is None:
        return None  # reported once per sample as unexpected
    extension = field.rsplit(".", 1)[-1]
    try:
        if extension == "json":
            json.loads(data)
            return None
        if extension in ("jpg", "png"):
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                return "not a decodable image"
            dtype, shape = str(image.dtype), list(image.shape)
        elif extension == "npy":
            array = np.load(io.BytesIO(data), allow_pickle=False)
            dtype, shape = str(array.dtype), list(array.shape)
        elif extension == "flac":
            info = soundfile.info(io.BytesIO(data))
            dtype, shape = "float32", [info.frames]
        else:
            return f"extension .{extension} is not allowed (npy, json, jpg, png, flac only)"
    except Exception as error:  # any decoding failure is a finding, not a crash
        return f"cannot be decoded ({type(error).__name__}: {error})"
    if (dtype, shape) != (spec["dtype"], spec["shape"]):
        return f"{dtype} {shape}, dataset.json says {spec['dtype']} {spec['shape']}"
    return None
