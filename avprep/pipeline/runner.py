"""Run the per-video pipeline over many videos: in isolation, in parallel (watched worker processes or Dask),
resumably."""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable

from avprep.media.ffmpeg import MediaError
from avprep.media.probe import probe
from avprep.media.video import decode_frames
from avprep.pipeline.config import SCHEMA_VERSION, ExtractConfig
from avprep.pipeline.faults import EnvironmentFault, holding, output_fault
from avprep.pipeline.inputs import VideoSource
from avprep.pipeline.stages import AudioStage, Stage, VideoContext, VideoTimingStage
from avprep.pipeline.store import PrepDir
from avprep.pipeline.workers import Lost, run_watched


def default_stages(config: ExtractConfig) -> list[Stage]:
    """The stages of an extract run, in order. Later stages may read what earlier ones left in the context."""
    stages: list[Stage] = [AudioStage(), VideoTimingStage()]
    if config.face is not None:
        from avprep.face.stage import FaceStage  # mediapipe loads only when faces are analysed

        stages.append(FaceStage())
        if config.morphable:
            from avprep.morphable.stage import MorphableStage

            stages.append(MorphableStage())
    if config.audio_features:
        from avprep.features.stage import AudioFeatureStage

        stages.append(AudioFeatureStage())
    return stages


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run; unlike ExtractConfig none of this changes the outputs."""

    jobs: int = 1
    backend: str = "loky"  # watched worker processes on this machine (avprep.pipeline.workers), or "dask"
    scheduler: str | None = None  # Dask scheduler address for backend="dask"
    force: bool = False  # redo videos already done with this config
    retry_failed: bool = False  # redo videos that failed with this config
    max_chunk_bytes: int = 64 << 20  # decoded pixels held in memory at once, per video
    manifest_every_s: float = 30.0  # how often a long run refreshes manifest.parquet
    video_timeout_s: float | None = None  # a video still running after this fails as "timeout"; None: see time_limit

    def time_limit(self, duration_s: float | None) -> float:
        """Seconds one video may take: ``video_timeout_s``, or by default 10 x its duration + 60 s (10 minutes
        while the probe, which reads the whole file, has not yet said how long it is)."""
        if self.video_timeout_s is not None:
            return self.video_timeout_s
        return 600.0 if duration_s is None else 60.0 + 10.0 * duration_s


@dataclasses.dataclass
class RunSummary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    failures: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    video_seconds: float = 0.0  # of the videos processed (not skipped) in this run
    frames: int = 0
    elapsed_s: float = 0.0
    manifest: Path | None = None


def extract_video(source: VideoSource, prep_root: str, config: ExtractConfig, max_chunk_bytes: int,
                  threads: int = 0, started: Callable[[float], None] | None = None) -> dict:
    """Process one video into prep/videos/<id>/ and return its record. Never raises for a bad video.

    ``started(duration_s)`` is told the video's duration once the probe knows it (the watcher's deadline)."""
    prep = PrepDir(prep_root)
    workdir = prep.new_workdir(source.video_id)
    record = base_record(source, config)
    try:
        info = probe(source.path, max_duration_s=config.max_duration_s)
        if started:
            started(info.duration_s)
        video_s = info.n_packets / info.fps
        if video_s < config.min_duration_s:
            raise MediaError("too short", f"{video_s:.2f} s of video is under the {config.min_duration_s:g} s "
                                          "minimum (--min-duration)")
        fps = config.fps or (round(info.fps, 2) if info.variable_fps else info.fps)
        record.update(duration_s=info.duration_s, fps=fps, source_fps=info.fps, variable_fps=info.variable_fps,
                      width=info.width, height=info.height, rotation=info.rotation, video_codec=info.video_codec,
                      audio_sr=info.audio_sr, audio_channels=info.audio_channels, audio_streams=info.audio_streams)
        video = VideoContext(source, config, info, fps, workdir, record)
        stages = default_stages(config)
        for stage in stages:
            stage.open(video)
        frame_stages = [stage for stage in stages if stage.needs_frames]
        if frame_stages:
            for chunk in decode_frames(source.path, width=info.width, height=info.height, fps=fps,
                                       max_chunk_bytes=max_chunk_bytes, threads=threads):
                for stage in frame_stages:
                    stage.frames(video, chunk)
        for stage in stages:
            stage.close(video)
        record.update(status="ok", arrays=video.arrays)
    except MediaError as error:
        record.update(status="failed", error_kind=error.kind, error=one_line(error.message))
    except Exception as error:  # a bug or an unforeseen input must still not stop the other videos
        where = traceback.extract_tb(error.__traceback__)[-1]
        record.update(status="failed", error_kind="internal error",
                      error=one_line(f"{type(error).__name__}: {error} "
                                     f"({os.path.basename(where.filename)}:{where.lineno})"))
    if record["status"] == "failed":
        for leftover in workdir.iterdir():  # a failed video keeps only its record
            leftover.unlink()
    prep.commit(workdir, record)
    return record


def _metadata(source: VideoSource) -> dict:
    """What a record says about a video that comes from its path and metadata, not from its content."""
    return dict(speaker=source.speaker, label=source.label, dataset_split=source.dataset_split,
                attributes=source.attributes)


def base_record(source: VideoSource, config: ExtractConfig) -> dict:
    try:
        stat = os.stat(source.path)
        size, mtime = stat.st_size, stat.st_mtime_ns
    except OSError:
        size = mtime = None
    return dict(schema_version=SCHEMA_VERSION, video_id=source.video_id, path=source.path, **_metadata(source),
                status="failed", error_kind=None, error=None, config_hash=config.hash(),
                source_size=size, source_mtime_ns=mtime)


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_reusable(record: dict | None, source: VideoSource, config: ExtractConfig, options: RunOptions) -> bool:
    """A finished record for the same file, made with the same config, that the options do not ask to redo."""
    if record is None or options.force or record.get("config_hash") != config.hash():
        return False
    if record.get("status") == "failed" and options.retry_failed:
        return False
    current = base_record(source, config)
    return (record.get("path"), record.get("source_size"), record.get("source_mtime_ns")) == (
        current["path"], current["source_size"], current["source_mtime_ns"])


def run_extract(sources: Iterable[VideoSource], prep_root: str | os.PathLike, config: ExtractConfig,
                options: RunOptions = RunOptions(),
                on_result: Callable[[dict, bool], None] | None = None) -> RunSummary:
    """Extract every source into ``prep_root``; ``on_result(record, skipped)`` is called as each video ends.

    One run at a time per prep folder (``FolderBusy`` names the other). When a video fails in a way the machine
    may cause (an internal error, a lost worker) and the folder then cannot take a 1 MiB write, the run stops with
    ``EnvironmentFault``: the videos that failed that way are forgotten, not recorded as failed, so a plain rerun
    does them; finished ones are kept."""
    with holding(prep_root, "extract"):
        return _run_extract(sources, PrepDir(prep_root), config, options, on_result)


MACHINE_KINDS = ("internal error", "worker crashed")  # failures a full disk or a vanished folder can also cause


def _run_extract(sources: Iterable[VideoSource], prep: PrepDir, config: ExtractConfig, options: RunOptions,
                 on_result: Callable[[dict, bool], None] | None) -> RunSummary:
    started = time.monotonic()
    prep.remove_partials()
    summary = RunSummary()
    todo = []
    for source in sources:
        record = prep.read_record(source.video_id)
        if is_reusable(record, source, config, options):
            record = prep.update_metadata(record, _metadata(source))
            summary.skipped += 1
            _count(summary, record, processed=False)
            if on_result:
                on_result(record, True)
        else:
            todo.append(source)
    last_manifest = time.monotonic()
    try:
        for record in _parallel_map(todo, str(prep.root), config, options):
            if record["status"] == "failed" and record.get("error_kind") in MACHINE_KINDS:
                _stop_on_output_fault(prep, todo)
            _count(summary, record, processed=True)
            if on_result:
                on_result(record, False)
            if time.monotonic() - last_manifest > options.manifest_every_s:
                prep.write_manifest()
                last_manifest = time.monotonic()
        summary.manifest = prep.write_manifest()
    except OSError:  # writing a record or the manifest here: the folder's fault, said as such, or a bug
        _stop_on_output_fault(prep, todo)
        raise
    summary.elapsed_s = time.monotonic() - started
    return summary


def _stop_on_output_fault(prep: PrepDir, todo: list[VideoSource]) -> None:
    """Raise ``EnvironmentFault`` when the prep folder cannot take a write, after forgetting the failures it may
    have caused."""
    fault = output_fault(prep.root)
    if fault is not None:
        _forget_machine_failures(prep, todo)
        raise EnvironmentFault(f"{fault}: nothing was recorded against the videos; free space (or fix the folder) "
                               "and run again: finished videos are kept, the rest are done then")


def _forget_machine_failures(prep: PrepDir, todo: list[VideoSource]) -> None:
    """This run's videos that failed as a machine fault can make them fail: not their fault, so not recorded."""
    for source in todo:
        record = prep.read_record(source.video_id)
        if record is not None and record["status"] == "failed" and record.get("error_kind") in MACHINE_KINDS:
            prep.forget(source.video_id)
    with contextlib.suppress(OSError):  # the manifest too may not fit; the rerun writes it
        prep.write_manifest()


def _count(summary: RunSummary, record: dict, processed: bool) -> None:
    if record["status"] == "ok":
        summary.ok += 1
        if processed:
            summary.video_seconds += record.get("video_duration_s") or 0.0
            summary.frames += record.get("n_frames") or 0
    else:
        summary.failed += 1
        summary.failures[record.get("error_kind") or "unknown"] += 1


def _parallel_map(todo: list[VideoSource], prep_root: str, config: ExtractConfig, options: RunOptions):
    """Records in completion order: from watched worker processes on this machine, or from a Dask cluster."""
    if not todo:
        return
    if options.backend == "dask":
        yield from _dask_map(todo, prep_root, config, options)
        return
    if options.backend != "loky":
        raise ValueError(f"unknown backend {options.backend!r}: use 'loky' or 'dask'")
    threads = max(1, (os.cpu_count() or 1) // options.jobs)
    work = functools.partial(extract_video, prep_root=prep_root, config=config,
                             max_chunk_bytes=options.max_chunk_bytes, threads=threads)
    for source, result in run_watched(work, todo, options.jobs, options.time_limit):
        yield lost_video(source, prep_root, config, result) if isinstance(result, Lost) else result


def _dask_map(todo: list[VideoSource], prep_root: str, config: ExtractConfig, options: RunOptions):
    """One Dask task per video. A task whose worker died every time Dask retried it (KilledWorker) fails as
    "worker crashed"; the other videos go on. ``--video-timeout`` is not enforced here (Dask cannot stop a task)."""
    from dask.distributed import Client, as_completed

    with Client(options.scheduler) as client:
        futures = {client.submit(extract_video, source, prep_root, config, options.max_chunk_bytes, threads=1,
                                 pure=False): source for source in todo}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as error:  # the task itself never raises: its worker was lost
                lost = Lost("worker crashed", one_line(f"{type(error).__name__}: {error}"))
                yield lost_video(futures[future], prep_root, config, lost)


def lost_video(source: VideoSource, prep_root: str, config: ExtractConfig, lost: Lost) -> dict:
    """The failed record of a video whose worker died or was killed; what it had half-written is removed."""
    prep = PrepDir(prep_root)
    for leftover in prep.partial.glob(f"{source.video_id}.*"):  # ids hold no dots: only this video's folders
        shutil.rmtree(leftover, ignore_errors=True)
    record = base_record(source, config)
    record.update(status="failed", error_kind=lost.kind, error=one_line(lost.message))
    prep.commit(prep.new_workdir(source.video_id), record)
    return record
