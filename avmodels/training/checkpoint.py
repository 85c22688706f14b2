"""How a run keeps its state: ``checkpoint.pt`` (everything needed to continue exactly) and ``stage-<name>.pt``
(each stage's final weights, complete in themselves), in the format of ``avmodels.checkpoints``.

``checkpoint.pt`` leaves out the networks that still hold what the last stage file holds, or what the run's seed
built them as (the first stage): its ``kept`` table names, for each network, that file (or ``initial``) and the
digest of its weights there, so a later stage's checkpoints carry what it trains, not every frozen network again.
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import torch

from avmodels import checkpoints
from avmodels.training.distributed import gather


class CheckpointKeeper:
    """Writes a run's checkpoints (rank 0 writes; every rank calls ``save``, which gathers each rank's RNG)."""

    def __init__(self, out: Path, config, info: dict, nets: dict, main: bool, kept: dict):
        self.out, self.config, self.info, self.nets, self.main, self.kept = out, config, info, nets, main, kept

    @classmethod
    def fresh(cls, out: Path, config, info: dict, nets: dict, main: bool) -> CheckpointKeeper:
        """A new run: every network not started from a user file is kept as ``initial`` (rebuilt from the seed)."""
        kept = {name: [checkpoints.INITIAL, checkpoints.state_digest(net.state_dict())]
                for name, net in nets.items() if name not in config.init} if main else {}
        return cls(out, config, info, nets, main, kept)

    def _weights(self) -> dict:
        return checkpoints.weights(self.config.method, self.config.document, self.info, self.nets)

    def save(self, optimizers: dict, schedulers: dict, position, trained: set[str]) -> None:
        """``checkpoint.pt`` at ``position``, with the networks the stage trains and any that changed."""
        rng = gather(rng_state())  # every rank's generators: each draws its own dropout masks
        if not self.main:
            return
        state = self._weights()
        state["networks"] = {name: weights for name, weights in state["networks"].items()
                             if name in trained or name not in self.kept
                             or checkpoints.state_digest(weights) != self.kept[name][1]}
        checkpoints.save_atomic({
            **state, "kept": self.kept,
            "optimizers": {name: optimizer.state_dict() for name, optimizer in optimizers.items()},
            "schedulers": {name: scheduler.state_dict() for name, scheduler in schedulers.items()}, "rng": rng,
            **dataclasses.asdict(position)}, self.out / "checkpoint.pt")

    def save_stage(self, stage: str) -> None:
        """``stage-<stage>.pt``: every network's weights; later checkpoints keep what it holds by reference."""
        if not self.main:
            return
        state = self._weights()
        checkpoints.save_atomic(state, self.out / f"stage-{stage}.pt")
        self.kept = {name: [f"stage-{stage}.pt", checkpoints.state_digest(weights)]
                     for name, weights in state["networks"].items()}


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
