"""Trained methods back from their checkpoints."""
from __future__ import annotations

from pathlib import Path

import torch

from avmodels.methods import get_method
from avmodels.training import checkpoint as checkpoints


def load_trained(path: str | Path, device: str | torch.device = "cpu"):
    """(method, networks in eval mode on ``device``, checkpoint) from a ``checkpoint.pt`` or ``stage-*.pt``."""
    saved = checkpoints.load(Path(path))
    recipe = checkpoints.recipe_of(saved)
    method = get_method(saved["method"])(recipe.get("model", {}), len(saved["speakers"]))
    checkpoints.load_networks(method.networks, saved)
    return method, {name: net.to(device).eval() for name, net in method.networks.items()}, saved

