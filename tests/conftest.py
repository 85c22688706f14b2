"""Shared test media: generated once per session from real faces (see avprep.synth)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from avprep.media.ffmpeg import ffmpeg_exe


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The broken-and-odd catalogue: folder and file name -> expected failure kind ("" = must succeed)."""
    from avprep.synth.catalogue import make_bad_catalogue

    folder = tmp_path_factory.mktemp("catalogue")
    return folder, make_bad_catalogue(folder)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A small speaker/clip corpus: 3 speakers x 2 clips of 2 s."""
    from avprep.synth.catalogue import make_demo_corpus

    folder = tmp_path_factory.mktemp("corpus")
    make_demo_corpus(folder, speakers=3, clips_per_speaker=2, seconds=2.0, fps=25, size=(320, 240), seed=1)
    return folder


@pytest.fixture(scope="session")
def prep(corpus, tmp_path_factory) -> Path:
    """The corpus with a timed transcript beside every clip (HeadGAN's character features), extracted."""
    videos = tmp_path_factory.mktemp("shard_videos")
    shutil.copytree(corpus, videos, dirs_exist_ok=True)
    for clip in videos.glob("*/*.mp4"):
        clip.with_suffix(".transcript.json").write_text(json.dumps(
            [{"start": 0.1, "end": 0.7, "text": "hello"}, {"start": 0.9, "end": 1.8, "text": "world"}]))
    out = tmp_path_factory.mktemp("shard_prep")
    run_cli("extract", str(videos), "-o", str(out), "-j", "2")
    return out


def run_ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True)


def run_cli(*args: str, check: bool = True, wrapper: tuple[str, ...] = (), **kwargs) -> subprocess.CompletedProcess:
    """Run ``avprep`` as a user would, in a subprocess (behind ``wrapper``, a command prefix, when given)."""
    result = subprocess.run([*wrapper, sys.executable, "-m", "avprep.cli", *args], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"}, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"avprep {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result
