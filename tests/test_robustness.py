"""Extract never loses a valid video: short or late audio, too-short clips, crashed or hung workers, corrupt bytes."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
from support import run_cli, run_ffmpeg

from avprep.pipeline.inputs import discover
from avprep.pipeline.store import PrepDir
from avprep.shard.recipe import load_recipe
from avprep.shard.run import run_shard
from avprep.synth.talking_head import make_talking_head

FPS = 25
SECONDS = 3.0


def by_name(prep: Path) -> dict[str, dict]:
    return {Path(r["path"]).stem: r for r in PrepDir(prep).records()}


def frames_table(prep: Path, record: dict) -> dict:
    return pq.read_table(prep / "videos" / record["video_id"] / "frames.parquet").to_pydict()


def with_audio(source: Path, out: Path, audio_filter: str, late_s: float = 0.0) -> None:
    """``source``'s video with its audio re-encoded through ``audio_filter``, starting ``late_s`` late and cut
    at the video's end (as clips cut on video frames are)."""
    late = ["-itsoffset", str(late_s)] if late_s else []
    run_ffmpeg("-i", str(source), *late, "-i", str(source), "-map", "0:v", "-map", "1:a", "-c:v", "copy",
               "-af", audio_filter, "-c:a", "aac", "-t", str(SECONDS), str(out))


@pytest.fixture(scope="session")
def short_audio(tmp_path_factory):
    """Clips whose audio ends early, starts late, or is offset from the video and cut at the video's end."""
    folder = tmp_path_factory.mktemp("short_audio")
    base = tmp_path_factory.mktemp("base") / "base.mp4"
    make_talking_head(base, identity="astronaut", seconds=SECONDS, fps=FPS, size=(320, 240), seed=7)
    with_audio(base, folder / "ends_1_frame_early.mp4", f"atrim=end={SECONDS - 1 / FPS}")
    with_audio(base, folder / "ends_0.3s_early.mp4", f"atrim=end={SECONDS - 0.3}")
    with_audio(base, folder / "ends_60pc_early.mp4", f"atrim=end={SECONDS * 0.4}")
    with_audio(base, folder / "starts_0.5s_late.mp4", "anull", late_s=0.5)
    offsets = {}
    for lag in range(-6, 7):
        name = f"offset{lag:+d}"
        if lag < 0:  # the sound comes before the mouth moves: the audio track is cut |lag| frames short
            with_audio(base, folder / f"{name}.mp4", f"atrim=start={-lag / FPS},asetpts=PTS-STARTPTS")
        else:  # the sound comes after the mouth: the audio track starts late and is cut at the video's end
            with_audio(base, folder / f"{name}.mp4", "anull", late_s=lag / FPS)
        offsets[name] = lag
    prep = tmp_path_factory.mktemp("short_audio_prep")
    result = run_cli("extract", str(folder), "-o", str(prep), "-j", "2")
    return prep, offsets, result


def test_short_and_late_audio_never_loses_a_video(short_audio):
    prep, _, result = short_audio
    records = by_name(prep)
    assert len(records) == 17 and "internal error" not in result.stdout + result.stderr
    for name, record in records.items():
        assert record["status"] == "ok", (name, record["error"])
        assert record["n_frames"] == SECONDS * FPS


@pytest.mark.parametrize("name, first, last", [
    ("ends_1_frame_early", 0, 73), ("ends_0.3s_early", 0, 67), ("ends_60pc_early", 0, 29),
    ("starts_0.5s_late", 12, 74), ("offset-6", 0, 68), ("offset+6", 5, 74)])
def test_frames_outside_the_real_audio_are_marked(short_audio, name, first, last):
    """has_audio is true exactly on the frames whose one-frame audio window the track covers (a late AAC track's
    first packet carries 1024 priming samples, 64 ms at 16 kHz, so it counts from 64 ms before the sound: 0.436 s
    rather than 0.5 s)."""
    prep, _, _ = short_audio
    has_audio = np.asarray(frames_table(prep, by_name(prep)[name])["has_audio"])
    assert np.flatnonzero(has_audio).tolist() == list(range(first, last + 1))


def test_offsets_of_tracks_cut_at_the_video_end_are_recovered(short_audio):
    prep, offsets, _ = short_audio
    records = by_name(prep)
    for name, lag in offsets.items():
        record = records[name]
        assert abs(record["av_offset_frames"] - lag) <= 1, (name, record["av_offset_frames"])
        assert record["av_offset_confidence"] >= 0.3, name


@pytest.mark.parametrize("recipe", ["wav2pix", "atvgnet", "davs"])
def test_shard_cuts_no_window_without_audio(short_audio, tmp_path, recipe):
    prep, _, _ = short_audio
    run_shard(prep, tmp_path, load_recipe(recipe))
    index = pq.read_table(tmp_path / "index.parquet").to_pylist()
    assert index
    records = {r["video_id"]: r for r in PrepDir(prep).records()}
    for row in index:
        record = records[row["video_id"]]
        shift = load_recipe(recipe).audio_shift_s(record) * FPS
        has_audio = frames_table(prep, record)["has_audio"]
        clip = range(row["start_frame"], row["start_frame"] + row["n_frames"])
        assert all(has_audio[int(round(f + shift))] for f in clip), row["key"]
    late = [row for row in index if row["video_id"] == by_name(prep)["ends_60pc_early"]["video_id"]]
    assert all(row["start_frame"] + row["n_frames"] <= 30 for row in late)


def test_a_video_under_the_minimum_duration_fails_as_too_short(tmp_path):
    make_talking_head(tmp_path / "blip.mp4", seconds=0.12, fps=FPS, size=(320, 240))
    make_talking_head(tmp_path / "longer.mp4", seconds=0.6, fps=FPS, size=(320, 240))
    run_cli("extract", str(tmp_path), "-o", str(tmp_path / "prep"), "--no-face")
    records = by_name(tmp_path / "prep")
    assert (records["blip"]["status"], records["blip"]["error_kind"]) == ("failed", "too short")
    assert "0.12 s" in records["blip"]["error"] and records["longer"]["status"] == "ok"
    run_cli("extract", str(tmp_path), "-o", str(tmp_path / "strict"), "--no-face", "--min-duration", "1")
    assert by_name(tmp_path / "strict")["longer"]["error_kind"] == "too short"


def ffmpeg_reading(path: Path, inside: psutil.Process) -> psutil.Process | None:
    """The ffmpeg process, under ``inside``, that has ``path`` on its command line."""
    for child in inside.children(recursive=True):
        try:
            if any(str(path) in argument for argument in child.cmdline()) and "ffmpeg" in child.name():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_a_worker_killed_mid_video_fails_only_that_video_and_a_retry_redoes_it(corpus, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(corpus, videos)
    victim = videos / "zz" / "long.mp4"
    victim.parent.mkdir()
    make_talking_head(victim, identity="ross", seconds=12.0, fps=FPS, size=(320, 240), seed=3)
    run = subprocess.Popen([sys.executable, "-m", "avprep.cli", "extract", str(videos), "-o", str(tmp_path / "prep"),
                            "-j", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    decoder = None
    while decoder is None and time.monotonic() < deadline and run.poll() is None:
        decoder = ffmpeg_reading(victim, psutil.Process(run.pid))
        if decoder is not None and "rawvideo" not in " ".join(decoder.cmdline()):
            decoder = None  # the probe or the audio: wait for the frame decode, well inside the video
        time.sleep(0.02)
    assert decoder is not None, "the long video's frame decoder never started"
    worker = decoder.parent()
    worker.send_signal(signal.SIGKILL)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0 and "Traceback" not in stderr
    records = {r["video_id"]: r for r in PrepDir(tmp_path / "prep").records()}
    assert (records["zz-long"]["status"], records["zz-long"]["error_kind"]) == ("failed", "worker crashed")
    assert "SIGKILL" in records["zz-long"]["error"]
    assert all(r["status"] == "ok" for name, r in records.items() if name != "zz-long") and len(records) == 7
    assert not list((tmp_path / "prep" / ".partial").glob("*"))
    run_cli("extract", str(videos), "-o", str(tmp_path / "prep"), "-j", "2", "--retry-failed")
    assert PrepDir(tmp_path / "prep").read_record("zz-long")["status"] == "ok"


def test_a_video_that_hangs_times_out_and_its_worker_is_replaced(corpus, tmp_path):
    """A named pipe that nobody writes: opening it blocks forever, as a stalled network mount does."""
    videos = tmp_path / "videos"
    videos.mkdir()
    os.mkfifo(videos / "a_stuck.mp4")
    shutil.copy(corpus / "hanks" / "clip00.mp4", videos / "b_fine.mp4")
    started = time.monotonic()
    run_cli("extract", str(videos), "-o", str(tmp_path / "prep"), "-j", "1", "--video-timeout", "3", "--no-face",
            timeout=120)
    assert time.monotonic() - started < 60
    records = by_name(tmp_path / "prep")
    assert (records["a_stuck"]["status"], records["a_stuck"]["error_kind"]) == ("failed", "timeout")
    assert records["b_fine"]["status"] == "ok"  # done by the worker that replaced the killed one


def test_folders_find_every_video_extension_and_direct_files_are_lists_only_when_text(catalogue, tmp_path):
    folder, _ = catalogue
    for extension in (".mpg", ".mpeg", ".m4v", ".ts", ".mts", ".flv", ".3gp", ".wmv"):
        (tmp_path / f"clip{extension}").write_bytes(b"x")
    assert {Path(s.path).suffix for s in discover([tmp_path])} == {".mpg", ".mpeg", ".m4v", ".ts", ".mts", ".flv",
                                                                    ".3gp", ".wmv"}
    odd = tmp_path / "direct" / "recording.video"
    odd.parent.mkdir()
    shutil.copy(folder / "with space.mp4", odd)
    listing = tmp_path / "direct" / "videos.lst"
    listing.write_text("recording.video\n")
    unnamed = tmp_path / "direct" / "videos"
    unnamed.write_text("# no extension, but text\nrecording.video\n")
    assert [s.path for s in discover([odd])] == [str(odd)]
    assert [s.path for s in discover([listing])] == [str(odd)] == [s.path for s in discover([unnamed])]
    run_cli("extract", str(odd), "-o", str(tmp_path / "prep"), "--no-face")
    assert by_name(tmp_path / "prep")["recording"]["status"] == "ok"


def test_links_to_folders_and_files_are_followed_cycles_read_once_and_each_video_found_once(tmp_path):
    """Datasets are often trees of links to shared storage (issue 27): links are followed, a cycle does not loop,
    and a video reached by several paths is one video, named by the first path."""
    shared = tmp_path / "shared"
    (shared / "spk2").mkdir(parents=True)
    (shared / "spk2" / "b.mp4").write_bytes(b"x")
    tree = tmp_path / "tree"
    (tree / "spk1").mkdir(parents=True)
    (tree / "spk1" / "a.mp4").write_bytes(b"x")
    (tree / "spk2").symlink_to(shared / "spk2", target_is_directory=True)  # a folder elsewhere
    (tree / "again").symlink_to(tree / "spk1", target_is_directory=True)  # the same folder twice
    (tree / "spk1" / "loop").symlink_to(tree, target_is_directory=True)  # a cycle
    (tree / "spk1" / "z_alias.mp4").symlink_to(tree / "spk1" / "a.mp4")  # the same file twice
    found = sorted(Path(s.path).relative_to(tree).as_posix() for s in discover([tree]))
    assert found == ["spk1/a.mp4", "spk2/b.mp4"]
    links_only = tmp_path / "links_only"
    links_only.mkdir()
    (links_only / "spk2").symlink_to(shared / "spk2", target_is_directory=True)
    assert [Path(s.path).name for s in discover([links_only])] == ["b.mp4"]  # was "no videos found"


def corruptions(data: bytes, seed: int, count: int) -> dict[str, bytes]:
    """Byte-level damage of many kinds: truncations, garbage blocks, zeroed headers, bit flips, duplicated middles."""
    rng = random.Random(seed)
    n = len(data)
    makers = [
        lambda: data[: rng.randrange(16, n)],
        lambda: _overwrite(data, rng.randrange(0, n - 4096), rng.randbytes(rng.choice([64, 1024, 4096]))),
        lambda: _overwrite(data, 0, bytes(rng.choice([8, 64, 512, 4096]))),
        lambda: _flip_bits(data, rng, rng.choice([1, 16, 256])),
        lambda: (lambda a, b: data[:b] + data[a:b] + data[b:])(*sorted(rng.sample(range(n), 2))),
    ]
    names = ["truncated", "garbage", "zeroed_header", "bit_flips", "duplicated_middle"]
    return {f"{names[i % 5]}_{i:03d}": makers[i % 5]() for i in range(count)}


def _overwrite(data: bytes, at: int, block: bytes) -> bytes:
    return data[:at] + block + data[at + len(block):]


def _flip_bits(data: bytes, rng: random.Random, flips: int) -> bytes:
    damaged = bytearray(data)
    for _ in range(flips):
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
    return bytes(damaged)


def fuzz(corpus: Path, tmp_path: Path, count: int) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for clip in (corpus / "hanks" / "clip00.mp4", corpus / "rachel" / "clip01.mp4"):
        for name, damaged in corruptions(clip.read_bytes(), seed=len(clip.name), count=count // 2).items():
            (videos / f"{clip.parent.name}_{name}.mp4").write_bytes(damaged)
    result = run_cli("extract", str(videos), "-o", str(tmp_path / "prep"), "-j", "2", "--video-timeout", "120",
                     timeout=60 * count)
    records = PrepDir(tmp_path / "prep").records()
    assert len(records) == 2 * (count // 2) and "Traceback" not in result.stderr
    for record in records:
        assert record["status"] == "ok" or record["error_kind"] not in (None, "internal error", "timeout"), \
            (Path(record["path"]).name, record["error_kind"], record["error"])


def test_corrupted_videos_fail_with_a_named_reason_or_succeed(corpus, tmp_path):
    fuzz(corpus, tmp_path, count=10)


@pytest.mark.slow
def test_many_corrupted_videos_fail_with_a_named_reason_or_succeed(corpus, tmp_path):
    fuzz(corpus, tmp_path, count=60)


# Faults of the machine, not of the videos (issue 27): a full disk, and a second run on the same folder.

def _small_files_only(limit: int):
    """preexec_fn: files written past ``limit`` bytes fail with EFBIG, as on a full disk (no signal)."""
    import resource

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow  # runs extract or shard twice in subprocesses
def test_a_full_disk_stops_extract_without_blaming_a_video_and_a_rerun_resumes(corpus, tmp_path):
    videos = tmp_path / "videos"
    for clip in sorted(corpus.glob("*/clip00.mp4"))[:2]:
        (videos / clip.parent.name).mkdir(parents=True)
        shutil.copy(clip, videos / clip.parent.name / clip.name)
    prep = tmp_path / "prep"
    full = run_cli("extract", str(videos), "-o", str(prep), "-j", "1", "--no-morphable", check=False,
                   preexec_fn=_small_files_only(200_000))
    said = " ".join(full.stderr.split())  # rich wraps long lines
    assert full.returncode == 1 and said.count("error:") == 1 and "Traceback" not in said, said
    assert "error: File too large writing to" in said and "nothing was recorded against the videos" in said
    assert not [r for r in PrepDir(prep).records() if r["status"] == "failed"]  # no video blamed
    again = run_cli("extract", str(videos), "-o", str(prep), "-j", "1", "--no-morphable")
    assert [r["status"] for r in PrepDir(prep).records()] == ["ok", "ok"] and "error" not in again.stderr


@pytest.mark.slow  # runs extract or shard twice in subprocesses
def test_a_full_disk_stops_shard_keeping_its_complete_shards(prep, tmp_path):
    shards = tmp_path / "shards"
    full = run_cli("shard", str(prep), "-o", str(shards), "--recipe", "davs", "--max-count", "2", check=False,
                   preexec_fn=_small_files_only(400_000))
    said = " ".join(full.stderr.split())
    assert full.returncode == 1 and "error: File too large writing to" in said and "Traceback" not in said, said
    assert not list(shards.glob(".*.partial")) and not (shards / "dataset.json").exists()
    run_cli("shard", str(prep), "-o", str(shards), "--recipe", "davs", "--max-count", "2")  # a plain rerun
    assert json.loads((shards / "dataset.json").read_text())["splits"]["train"]["samples"] > 0


def test_a_second_run_on_a_folder_in_use_refuses_naming_the_first(corpus, tmp_path):
    from avprep.pipeline.faults import holding

    prep = tmp_path / "prep"
    with holding(prep, "extract"):  # a run of this process holds the folder
        second = run_cli("extract", str(corpus), "-o", str(prep), check=False)
        shard = run_cli("shard", str(prep), "-o", str(prep), "--recipe", "wav2pix", check=False)
    assert second.returncode == 1 and f"is being written by another extract (pid {os.getpid()}" in second.stderr
    assert shard.returncode == 1 and "is being written by another extract" in shard.stderr
    assert not (prep / "videos").exists()  # the second run touched nothing
