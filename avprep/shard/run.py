"""``avprep shard``: plan the samples, write the shards in parallel, then the index and dataset.json."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

import joblib
import pyarrow as pa
import pyarrow.parquet as pq

from avprep.pipeline.faults import EnvironmentFault, holding, output_fault
from avprep.pipeline.store import PrepDir, write_text_atomic
from avprep.shard.plan import SampleRef, plan_samples, sample_rate_of
from avprep.shard.recipe import Recipe, RecipeError
from avprep.shard.sample import OtherFaces, VideoCache, build_sample
from avprep.shard.schema import SCHEMA_VERSION, member_schema
from avprep.shard.writer import tar_bytes, tar_file_bytes, write_tar


@dataclasses.dataclass
class ShardSummary:
    samples: dict[str, int]
    shards_written: int
    shards_skipped: int
    bytes_written: int
    out: Path
    left_out: list[str] = dataclasses.field(default_factory=list)  # tracks the recipe refused, with the reason
    resampled: int = 0  # videos whose frames were taken at the recipe's rate, not their own


def run_shard(prep: str | Path, out: str | Path, recipe: Recipe, *, max_count: int = 1000,
              max_size: int | None = None, jobs: int = 1, backend: str = "loky", scheduler: str | None = None,
              force: bool = False) -> ShardSummary:
    """Shard ``prep`` into ``out`` with ``recipe``: one run at a time per folder (``FolderBusy`` names the
    other); a folder that cannot take the writes stops the run with ``EnvironmentFault`` (complete shards are
    kept, a rerun writes the rest)."""
    prep, out = Path(prep), Path(out)
    with holding(out, "shard"):
        try:
            return _run_shard(prep, out, recipe, max_count, max_size, jobs, backend, scheduler, force)
        except OSError:
            fault = output_fault(out)
            if fault is not None:
                raise EnvironmentFault(f"{fault}: the complete shards are kept; free space (or fix the folder) and "
                                       "run again to write the rest") from None
            raise


def _run_shard(prep: Path, out: Path, recipe: Recipe, max_count: int, max_size: int | None, jobs: int,
               backend: str, scheduler: str | None, force: bool) -> ShardSummary:
    left_out: list[str] = []
    samples, speakers, labels = plan_samples(prep, recipe, left_out)
    sampled = {s.video_id for s in samples}
    records = [r for r in PrepDir(prep).records() if r["status"] == "ok"]
    resampled = sum(sample_rate_of(r, recipe) != r["fps"] for r in records if r["video_id"] in sampled)
    plan = _plan_hash(prep, recipe, samples, max_count, max_size)
    _prepare(out, plan, force)
    sizes = None if max_size is None else _sample_sizes(prep, out, recipe, samples, plan, jobs, backend, scheduler)
    shards = _group(samples, max_count, max_size, sizes)
    todo = [(name, group) for name, group in shards.items() if not (out / name).exists()]
    written = _write_all(prep, out, recipe, samples, todo, jobs, backend, scheduler)
    attributes = _attributes(samples)
    _write_index(out, shards, attributes)
    names = [name for name, _ in recipe.fractions] + sorted({s.split for s in samples} - dict(recipe.fractions).keys())
    counts = {split: sum(1 for s in samples if s.split == split) for split in names}
    vocabulary = {name: sorted({v for v in values.values() if v is not None}, key=str)
                  for name, values in attributes.items()}
    dataset = {
        "schema_version": SCHEMA_VERSION, "recipe": recipe.to_json(), "fields": member_schema(recipe),
        "speakers": speakers, "labels": labels, "attributes": vocabulary, "sample_rate": 16000, "plan": plan,
        "max_count": max_count, "max_size": max_size, "left_out": left_out,
        "fps": sorted({sample_rate_of(r, recipe) for r in records}),
        "splits": {split: {"samples": counts[split], "shards": sorted(n for n in shards if n.startswith(split + "-"))}
                   for split in counts},
    }
    write_text_atomic(out / "dataset.json", json.dumps(dataset, indent=1, sort_keys=True) + "\n")
    return ShardSummary(counts, len(todo), len(shards) - len(todo), sum(written), out, left_out, resampled)


def _plan_hash(prep: Path, recipe: Recipe, samples: list[SampleRef], max_count: int, max_size: int | None) -> str:
    """Changes whenever the shards would: recipe, limits, samples and the extract settings behind them."""
    configs = sorted({(r["video_id"], r["config_hash"]) for r in PrepDir(prep).records()})
    payload = json.dumps([SCHEMA_VERSION, recipe.to_json(), max_count, max_size, configs,
                          [dataclasses.astuple(s) for s in samples]], sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def _prepare(out: Path, plan: str, force: bool) -> None:
    """Resume a run of the same plan; refuse to mix plans; ``force`` starts over."""
    dataset = out / "dataset.json"
    previous = json.loads(dataset.read_text())["plan"] if dataset.exists() else None
    stale = [p for pattern in ("*.tar", ".*.partial", ".sizes-*.json") for p in out.glob(pattern)]
    if force:
        for path in stale + [dataset, out / "index.parquet"]:
            path.unlink(missing_ok=True)
    elif previous is not None and previous != plan:
        raise RecipeError(f"{out} holds shards of another plan (recipe, limits or prep changed): use --force to "
                          "replace them, or another folder")
    out.mkdir(parents=True, exist_ok=True)
    for partial in out.glob(".*.partial"):
        partial.unlink()


def _sample_sizes(prep: Path, out: Path, recipe: Recipe, samples: list[SampleRef], plan: str, jobs: int,
                  backend: str, scheduler: str | None) -> list[int]:
    """Each sample's exact bytes inside a tar, for ``--max-size``: every sample is built once (in parallel) only
    to be measured. Kept in ``OUT/.sizes-<plan>.json`` so that a resumed run does not measure again."""
    cache = out / f".sizes-{plan}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    chunks = [samples[i: i + 64] for i in range(0, len(samples), 64)]
    tasks = (joblib.delayed(_measure)(str(prep), recipe, chunk, samples) for chunk in chunks)
    sizes = [size for chunk in _parallel(tasks, jobs, backend, scheduler) for size in chunk]
    write_text_atomic(cache, json.dumps(sizes))
    return sizes


def _measure(prep: str, recipe: Recipe, chunk: list[SampleRef], samples: list[SampleRef]) -> list[int]:
    videos = VideoCache(Path(prep))
    try:
        others = OtherFaces(samples, videos)
        return [tar_bytes(map(len, build_sample(s, recipe, videos[s.video_id], others).values())) for s in chunk]
    finally:
        videos.close()


def _group(samples: list[SampleRef], max_count: int, max_size: int | None,
           sizes: list[int] | None) -> dict[str, list[SampleRef]]:
    """Consecutive samples of each split into shards of at most ``max_count`` samples and ``max_size`` bytes."""
    by_split: dict[str, list[tuple[SampleRef, int]]] = {}
    for sample, size in zip(samples, sizes or [0] * len(samples)):
        by_split.setdefault(sample.split, []).append((sample, size))
    limit = math.inf if max_size is None else max_size
    shards: dict[str, list[SampleRef]] = {}
    for split, members in by_split.items():
        groups: list[list[SampleRef]] = [[]]
        used = 0
        for sample, size in members:
            if tar_file_bytes(size) > limit:
                raise RecipeError(f"--max-size {max_size} is smaller than one sample ({sample.key} alone makes a "
                                  f"{tar_file_bytes(size)}-byte shard)")
            if groups[-1] and (len(groups[-1]) == max_count or tar_file_bytes(used + size) > limit):
                groups.append([])
                used = 0
            groups[-1].append(sample)
            used += size
        shards.update({f"{split}-{i:06d}.tar": group for i, group in enumerate(groups)})
    return shards


def write_shard(prep: str, out: str, recipe: Recipe, name: str, group: list[SampleRef],
                samples: list[SampleRef]) -> int:
    """One shard file (a task of the parallel run): its samples built and written in order."""
    videos = VideoCache(Path(prep))
    try:
        others = OtherFaces(samples, videos)
        built = [(s.key, build_sample(s, recipe, videos[s.video_id], others)) for s in group]
    finally:
        videos.close()
    return write_tar(Path(out) / name, built)


def _write_all(prep, out, recipe, samples, todo, jobs, backend, scheduler) -> list[int]:
    tasks = (joblib.delayed(write_shard)(str(prep), str(out), recipe, name, group, samples) for name, group in todo)
    return _parallel(tasks, jobs, backend, scheduler)


def _parallel(tasks, jobs: int, backend: str, scheduler: str | None) -> list:
    if backend == "dask":
        from dask.distributed import Client

        with Client(scheduler), joblib.parallel_config(backend="dask"):
            return list(joblib.Parallel(n_jobs=-1)(tasks))
    return list(joblib.Parallel(n_jobs=jobs)(tasks))


def _attributes(samples: list[SampleRef]) -> dict[str, dict[str, object]]:
    """Metadata attribute -> {video_id: value or None} over the sampled videos (from ``--meta``)."""
    per_video = {s.video_id: dict(s.attributes) for s in samples}
    names = sorted({name for values in per_video.values() for name in values})
    return {name: {video: values.get(name) for video, values in per_video.items()} for name in names}


def _write_index(out: Path, shards: dict[str, list[SampleRef]], attributes: dict[str, dict[str, object]]) -> None:
    rows = [dict(key=s.key, shard=name, split=s.split, speaker=s.speaker, video_id=s.video_id, track=s.track,
                 start_frame=s.start_frame, n_frames=s.n_frames, label=s.label,
                 **{attribute: values[s.video_id] for attribute, values in attributes.items()})
            for name, group in shards.items() for s in group]
    table = pa.Table.from_pylist(rows) if rows else pa.table({"key": pa.array([], pa.string())})
    partial = out / ".index.parquet.partial"
    pq.write_table(table, partial)
    os.replace(partial, out / "index.parquet")
