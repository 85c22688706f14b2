"""Shared test media, generated once per session from real faces (see avprep.synth), and what is made from it:
one extracted ``prep`` and one extracted LRW-shaped tree, shards of any recipe (``shards_for``, cached), the toy
method registered for the trainer's tests."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
from support import WORDS, run_cli, run_ffmpeg


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


# GRID .align: start and end in 1/25000 s, silences "sil" and "sp".
ALIGN = "0 12000 sil\n12000 20000 bin\n20000 30000 blue\n30000 31000 sp\n31000 50000 now\n"


@pytest.fixture(scope="session")
def trees(corpus, tmp_path_factory) -> dict[str, Path]:
    """Small LRW-, GRID-, VoxCeleb- and HDTF-shaped trees made of the test corpus (hard links), with their side
    files."""
    root = tmp_path_factory.mktemp("datasets")
    clips = sorted(corpus.glob("*/*.mp4"))
    lrw = root / "lipread_mp4"
    for w, word in enumerate(WORDS):
        for s, split in enumerate(("train", "val", "test")):
            clip = lrw / word / split / f"{word}_0000{s + 1}.mp4"
            clip.parent.mkdir(parents=True)
            os.link(clips[(3 * w + s) % len(clips)], clip)  # hard links: a symbolic link to a file already
            # listed is the same video, found once (extract's inputs)
            clip.with_suffix(".txt").write_text(f"Text:  {word}\nConf:  1\n\nDuration: 0.40 seconds\n")
    grid = root / "grid"
    for speaker, code, clip in (("s1", "bbaf2n", clips[0]), ("s1", "lgaz8p", clips[1]), ("s2", "bbaf3s", clips[2])):
        video = grid / speaker / "video" / f"{code}.mpg"
        video.parent.mkdir(parents=True, exist_ok=True)
        run_ffmpeg("-i", str(clip), "-c:v", "mpeg2video", "-q:v", "3", "-c:a", "mp2", "-f", "mpeg", str(video))
        (grid / speaker / "align").mkdir(exist_ok=True)
        (grid / speaker / "align" / f"{code}.align").write_text(ALIGN)
    for layout, relative in (("voxceleb", "id00012/21Uxsk56VDQ/00001.mp4"), ("voxceleb", "id00015/abcDEF/00002.mp4"),
                             ("hdtf", "WDA_BarackObama_000.mp4"), ("hdtf", "RD_Radio11_001.mp4")):
        link = root / layout / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        os.link(clips[0], link)
    return {"lrw": lrw, "grid": grid, "voxceleb": root / "voxceleb", "hdtf": root / "hdtf"}


@pytest.fixture(scope="session")
def lrw_prep(trees, tmp_path_factory) -> Path:
    prep = tmp_path_factory.mktemp("lrw_prep")
    run_cli("extract", str(trees["lrw"]), "-o", str(prep), "-j", "2")
    return prep


@pytest.fixture(scope="session")
def shards_for(prep, lrw_prep, tmp_path_factory):
    """``shards_for(recipe, source="prep"|"lrw", max_count=None, **recipe_fields)``: the shards of a recipe (its
    fields replaced) cut from the session's prep, made once per session for each distinct request."""
    from avprep.shard.recipe import load_recipe
    from avprep.shard.run import run_shard

    made: dict[tuple, Path] = {}

    def make(recipe: str, source: str = "prep", max_count: int | None = None, **fields) -> Path:
        request = (recipe, source, max_count, tuple(sorted(fields.items())))
        if request not in made:
            folder = tmp_path_factory.mktemp(f"shards_{recipe}")
            run_shard(prep if source == "prep" else lrw_prep, folder,
                      dataclasses.replace(load_recipe(recipe), **fields), max_count=max_count)
            made[request] = folder
        return made[request]

    return make


@pytest.fixture(scope="session")
def synthetic_for(tmp_path_factory):
    """``synthetic_for(method)``: synthetic shards of the method's recipe (``support.write_shards``), made once."""
    from support import write_shards

    made: dict[str, Path] = {}

    def make(method: str) -> Path:
        if method not in made:
            made[method] = write_shards(tmp_path_factory.mktemp(f"synthetic_{method}") / "shards", method)
        return made[method]

    return make


@pytest.fixture(scope="session")
def trained_for(synthetic_for, tmp_path_factory):
    """``trained_for(method)``: the run folder of every stage of the method trained briefly (``support.TINY``)
    on its synthetic shards, made once per session: a checkpoint for sampling and evaluation tests, stage files
    and metrics for the contract suite."""
    from support import tiny_config

    from avmodels.training.trainer import train

    made: dict[str, Path] = {}

    def make(method: str) -> Path:
        if method not in made:
            made[method] = tmp_path_factory.mktemp(f"trained_{method}")
            train(tiny_config(method), synthetic_for(method), made[method], device="cpu")
        return made[method]

    return make


@pytest.fixture(scope="module")
def toy():
    """The trainer tests' toy method (``support.Toy``) in the registry, as ``toy``, for one test module."""
    from avmodels.methods import METHODS

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(METHODS, "toy", "support:Toy")
        yield "toy"
