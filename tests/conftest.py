"""Shared test media: generated once per session from real faces (see avprep.synth)."""
from __future__ import annotations

import os
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


def run_ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True)


def run_cli(*args: str, check: bool = True, wrapper: tuple[str, ...] = (), **kwargs) -> subprocess.CompletedProcess:
    """Run ``avprep`` as a user would, in a subprocess (behind ``wrapper``, a command prefix, when given)."""
    result = subprocess.run([*wrapper, sys.executable, "-m", "avprep.cli", *args], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"}, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"avprep {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result
