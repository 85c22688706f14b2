"""The model shipped with avprep, and how it was made.

``default_basis.npz`` was built by ``build_model`` from the demo corpus (7 speakers x 2 clips of 4 s, generated
from real photos by avprep.synth): 6 identity and 10 expression components. Seven people and synthetic motion
make a small basis; build one from real footage for real work (see the package docstring). Remake it with
``remake_default_basis(WORK_DIR)`` (about a minute on 2 cores).
"""
from __future__ import annotations

import os
from pathlib import Path

from avprep.morphable.model import MorphableModel

DEFAULT_BASIS = Path(__file__).with_name("default_basis.npz")


def load_default_model() -> MorphableModel:
    return MorphableModel.load(DEFAULT_BASIS)


def remake_default_basis(work_dir: str | os.PathLike, out_path: str | os.PathLike = DEFAULT_BASIS) -> MorphableModel:
    """Generate the demo corpus in ``work_dir``, extract it and build the default basis from it."""
    from avprep.morphable.build import build_and_save
    from avprep.pipeline.config import ExtractConfig
    from avprep.pipeline.inputs import discover
    from avprep.pipeline.runner import RunOptions, run_extract
    from avprep.synth.catalogue import make_demo_corpus

    corpus, prep = Path(work_dir) / "corpus", Path(work_dir) / "prep"
    make_demo_corpus(corpus, speakers=7, clips_per_speaker=2, seconds=4.0)
    run_extract(discover([corpus]), prep, ExtractConfig(), RunOptions(jobs=2))
    return build_and_save(prep, out_path, n_identity=6, n_expression=10)
