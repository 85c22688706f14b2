"""The extract run: isolation of bad files, manifest, resumption, parallel backends, bounded memory."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import run_cli, run_ffmpeg

from avprep.media.audio import SAMPLE_RATE, read_flac
from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import RunOptions, run_extract
from avprep.pipeline.store import PrepDir

MANIFEST_COLUMNS = {"video_id", "path", "speaker", "status", "error", "error_kind", "duration_s", "fps",
                    "variable_fps", "width", "height", "n_frames", "audio_sr", "audio_duration_s", "config_hash"}


def by_file_name(prep: Path) -> dict[str, dict]:
    return {os.path.basename(r["path"]): r for r in PrepDir(prep).records()}


@pytest.fixture(scope="session")
def extracted_catalogue(catalogue, tmp_path_factory):
    folder, expected = catalogue
    prep = tmp_path_factory.mktemp("prep_catalogue")
    summary = run_extract(discover([folder]), prep, ExtractConfig(), RunOptions(jobs=2))
    return prep, expected, summary


def test_every_bad_file_fails_with_its_reason_and_the_rest_succeed(extracted_catalogue):
    prep, expected, summary = extracted_catalogue
    records = by_file_name(prep)
    assert set(records) == set(expected)
    for name, kind in expected.items():
        record = records[name]
        if kind:
            assert (record["status"], record["error_kind"]) == ("failed", kind), name
            assert record["error"] and "\n" not in record["error"] and "Traceback" not in record["error"]
            assert os.listdir(prep / "videos" / record["video_id"]) == ["record.json"]
        else:
            assert record["status"] == "ok", (name, record["error"])
    assert summary.failed == sum(1 for kind in expected.values() if kind)


def test_odd_but_valid_files_extract_fully(extracted_catalogue):
    prep, _, _ = extracted_catalogue
    records = by_file_name(prep)
    for name in ["with space.mp4", "-leading-dash.mp4", "ünïcödé 名前.mp4", "clip.webm", "clip.avi", "clip.mov"]:
        record = records[name]
        video_id = record["video_id"]
        assert "." not in video_id and not video_id.startswith("-") and video_id.isascii()
        audio, rate = read_flac(prep / "videos" / video_id / "audio.flac")
        assert rate == SAMPLE_RATE
        assert abs(audio.size / SAMPLE_RATE - record["n_frames"] / record["fps"]) < 2 / record["fps"], name
    rotated = records["rotated90.mp4"]
    assert (rotated["width"], rotated["height"], rotated["rotation"]) == (360, 640, 90)
    vfr = records["vfr.mkv"]
    assert vfr["variable_fps"] and vfr["status"] == "ok"


def test_manifest_has_one_row_per_video_with_the_documented_columns(extracted_catalogue):
    prep, expected, _ = extracted_catalogue
    table = pq.read_table(prep / "manifest.parquet")
    assert MANIFEST_COLUMNS <= set(table.column_names)
    assert table.num_rows == len(expected)
    rows = table.to_pylist()
    assert [r["video_id"] for r in rows] == sorted(r["video_id"] for r in rows)
    assert {r["status"] for r in rows} == {"ok", "failed"}


def test_unreadable_file_fails_with_permission_denied(tmp_path, catalogue):
    folder, _ = catalogue
    locked = tmp_path / "locked.mp4"
    shutil.copy(folder / "with space.mp4", locked)
    os.chmod(locked, 0)
    wrapper: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        wrapper = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")
    run_cli("extract", str(locked), "-o", str(tmp_path / "prep"), wrapper=wrapper)
    record = by_file_name(tmp_path / "prep")["locked.mp4"]
    assert (record["status"], record["error_kind"]) == ("failed", "permission denied")


def test_rerun_skips_done_videos_force_redoes_them_and_a_new_config_redoes_them(corpus, tmp_path):
    prep = tmp_path / "prep"
    sources = discover([corpus])
    first = run_extract(sources, prep, ExtractConfig())
    assert (first.ok, first.skipped) == (len(sources), 0)
    stamps = {p: p.stat().st_mtime_ns for p in prep.glob("videos/*/record.json")}
    again = run_extract(sources, prep, ExtractConfig())
    assert (again.ok, again.skipped, again.frames) == (len(sources), len(sources), 0)
    assert stamps == {p: p.stat().st_mtime_ns for p in prep.glob("videos/*/record.json")}
    forced = run_extract(sources, prep, ExtractConfig(), RunOptions(force=True))
    assert forced.skipped == 0 and forced.frames == first.frames
    resampled = run_extract(sources, prep, ExtractConfig(fps=10))
    assert resampled.skipped == 0
    records = PrepDir(prep).records()
    assert {r["config_hash"] for r in records} == {ExtractConfig(fps=10).hash()}
    assert all(r["n_frames"] == 20 for r in records)  # 2 s at 10 fps


def test_failed_videos_are_retried_only_when_asked(catalogue, tmp_path):
    folder, _ = catalogue
    sources = discover([folder / "no_audio.mp4", folder / "with space.mp4"])
    run_extract(sources, tmp_path, ExtractConfig())
    assert run_extract(sources, tmp_path, ExtractConfig()).skipped == 2
    retried = run_extract(sources, tmp_path, ExtractConfig(), RunOptions(retry_failed=True))
    assert (retried.skipped, retried.failed) == (1, 1)


def test_speakers_from_layout_list_files_and_meta_csv(corpus, tmp_path):
    sources = discover([corpus])
    assert {s.speaker for s in sources} == {p.name for p in corpus.iterdir() if p.is_dir()}
    assert all(s.video_id.startswith(f"{s.speaker}-") for s in sources)
    listing = tmp_path / "videos.txt"
    listing.write_text("# two clips\n" + "\n".join(s.path for s in sources[:2]) + "\n\n")
    listed = discover([listing])
    assert [s.path for s in listed] == [s.path for s in sources[:2]]
    meta = tmp_path / "meta.csv"
    meta.write_text("video_id,speaker\n" + "".join(f"{s.video_id},person{i}\n" for i, s in enumerate(sources)))
    assert [s.speaker for s in discover([corpus], meta)] == [f"person{i}" for i in range(len(sources))]


def test_video_ids_are_stable_and_key_safe():
    from avprep.pipeline.inputs import video_id_for

    assert video_id_for("id00012/21Uxsk56VDQ/00001.mp4") == "id00012-21Uxsk56VDQ-00001"
    odd = video_id_for("spk/clip 1.v2.mp4")
    assert odd == video_id_for("spk/clip 1.v2.mp4") and odd.startswith("spk-clip_1_v2-") and "." not in odd
    assert video_id_for("spk/clip 1.v2.mp4") != video_id_for("spk/clip_1_v2.mp4")


def test_cli_exit_codes(catalogue, tmp_path):
    folder, _ = catalogue
    ok = run_cli("extract", str(folder / "with space.mp4"), str(folder / "empty.mp4"), "-o", str(tmp_path / "a"))
    assert "empty file" in ok.stderr and "Traceback" not in ok.stderr
    failing = run_cli("extract", str(folder / "empty.mp4"), "-o", str(tmp_path / "b"), "--fail-on-error", check=False)
    assert failing.returncode == 1
    missing = run_cli("extract", str(tmp_path / "nope"), "-o", str(tmp_path / "c"), check=False)
    assert missing.returncode == 2 and "input not found" in missing.stderr
    bad_backend = run_cli("extract", str(folder), "-o", str(tmp_path / "d"), "--backend", "spark", check=False)
    assert bad_backend.returncode == 2


@pytest.mark.parametrize("command", [[], ["demo"], ["extract"], ["manifest"], ["inspect"], ["shard"], ["validate"],
                                     ["report"], ["morphable", "build"]])
def test_help_of_every_command(command):
    result = run_cli(*command, "--help")
    assert "Usage" in result.stdout and len(result.stdout) > 200


def snapshot(prep: Path) -> dict[str, bytes]:
    """Every output file's bytes, and the manifest's rows (parquet bytes carry no meaning of their own)."""
    files = {str(p.relative_to(prep)): p.read_bytes() for p in sorted(prep.rglob("*"))
             if p.is_file() and p.name != "manifest.parquet"}
    files["manifest rows"] = json.dumps(pq.read_table(prep / "manifest.parquet").to_pylist(), sort_keys=True).encode()
    return files


def test_a_killed_run_resumes_to_exactly_the_outputs_of_a_clean_run(corpus, catalogue, tmp_path):
    folder, _ = catalogue
    inputs = [str(corpus), str(folder / "no_audio.mp4"), str(folder / "clip.mov")]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_cli("extract", *inputs, "-o", str(clean))
    for kill_after_records in (1, 3):  # kill -9 twice, at different points of the run
        process = subprocess.Popen([sys.executable, "-m", "avprep.cli", "extract", *inputs, "-o", str(killed)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(list(killed.glob("videos/*/record.json"))) < kill_after_records and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert len(list(killed.glob("videos/*/record.json"))) < len(list(clean.glob("videos/*/record.json")))
    run_cli("extract", *inputs, "-o", str(killed))
    assert not list(killed.glob(".partial/*"))
    assert snapshot(killed) == snapshot(clean)


@pytest.mark.slow  # a local Dask cluster started for one extract
def test_dask_backend_on_a_local_cluster(corpus, tmp_path):
    from dask.distributed import LocalCluster

    sources = discover([corpus])
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
        summary = run_extract(sources, tmp_path, ExtractConfig(),
                              RunOptions(backend="dask", scheduler=cluster.scheduler_address))
    assert (summary.ok, summary.failed) == (len(sources), 0)
    assert len(PrepDir(tmp_path).records()) == len(sources)


@pytest.mark.slow  # a long 720p video extracted while its memory is sampled
def test_memory_stays_bounded_on_a_long_720p_video(tmp_path):
    long_video = tmp_path / "long.mp4"
    seconds = 60  # 1500 frames of 1280x720: 4.1 GB of decoded pixels
    run_ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={seconds}",
               "-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=16000:duration={seconds}",
               "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(long_video))
    script = ("import resource, subprocess, sys\n"
              "subprocess.run([sys.executable, '-m', 'avprep.cli', 'extract', sys.argv[1], '-o', sys.argv[2],"
              " '--chunk-mb', '32', '--no-face'], check=True)\n"
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    result = subprocess.run([sys.executable, "-c", script, str(long_video), str(tmp_path / "prep")],
                            capture_output=True, text=True, check=True)
    peak_mib = int(result.stdout.split()[-1]) / 1024
    record = PrepDir(tmp_path / "prep").records()[0]
    assert record["status"] == "ok" and record["n_frames"] == seconds * 25
    assert peak_mib < 500, f"peak RSS {peak_mib:.0f} MiB"
