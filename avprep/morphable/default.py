"""The model shipped with avprep, and how it was made.

``default_basis.npz`` was built by ``build_model`` from the demo corpus (7 speakers x 2 clips of 4 s, generated
from real photos by avprep.synth): 6 identity and 10 expression components. Seven people and synthetic motion
make a small basis; build one from real footage for real work (see the package docstring). Remake it with
``avprep.morphable.build.remake_default_basis(WORK_DIR)`` (about a minute on 2 cores).
"""
from __future__ import annotations

from pathlib import Path

from avprep.morphable.model import MorphableModel

DEFAULT_BASIS = Path(__file__).with_name("default_basis.npz")


def load_default_model() -> MorphableModel:
    return MorphableModel.load(DEFAULT_BASIS)
