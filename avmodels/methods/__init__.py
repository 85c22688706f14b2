"""The methods, by name, and trained methods back from their checkpoints.

A method is a package here whose class subclasses ``avmodels.methods.base.Method`` (the whole contract); adding
one is that package, a line in ``METHODS``, a recipe ``pipelines/<name>.toml`` and ``docs/methods/<name>.md``
(docs/training.md, "Adding a method").
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

from avmodels import checkpoints
from avmodels.methods.base import Method

METHODS = {  # name -> its class, imported when asked for (a method imports only what it uses)
    "atvgnet": "avmodels.methods.atvgnet:ATVGnet",
    "davs": "avmodels.methods.davs:DAVS",
    "ear_sr": "avmodels.methods.ear_sr:EarSR",
    "headgan": "avmodels.methods.headgan:HeadGAN",
    "wav2pix": "avmodels.methods.wav2pix:Wav2Pix",
}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise KeyError(f"no method named {name!r}; known: {', '.join(sorted(METHODS))}")
    module, _, attribute = METHODS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[Method, dict, dict]:
    """(method, networks in eval mode on ``device``, checkpoint) from a ``checkpoint.pt`` or ``stage-*.pt``."""
    saved = checkpoints.load(Path(path))
    recipe = checkpoints.recipe_of(saved)
    with torch.random.fork_rng(devices=[]):  # built as the trainer built them: networks kept as initial match
        torch.manual_seed(recipe.get("train", {}).get("seed", 0))
        method = get_method(saved["method"])(recipe.get("model", {}), checkpoints.dataset_of(saved))
    checkpoints.load_networks(method.networks, saved)
    return method, {name: net.to(device).eval() for name, net in method.networks.items()}, saved
