"""The contract between a method and the trainer, ``avmodels sample`` and ``avmodels eval``: all of it, here.

A method is a package ``avmodels/methods/<name>/`` whose class subclasses ``Method``, one line in
``avmodels.methods.METHODS``, a recipe ``pipelines/<name>.toml`` and a page ``docs/methods/<name>.md``. The trainer
owns the loop (optimisers, schedules, autocast, clipping, logging, checkpoints, resume, DDP): a method never steps
an optimiser. It declares what it has and answers the hooks below; the ones with a body here are optional.

``nets`` is ``networks`` as the step sees them: wrapped for DDP or compiled while training (``unwrapped`` gives
the module itself), plain in sampling and evaluation. ``ctx`` is the step's ``StepContext``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class StepContext:
    """What the hooks are told about the step they serve."""

    stage: str
    stage_step: int  # steps done in this stage
    step: int  # overall, across stages
    epoch: int  # of this stage's data
    rank: int = 0
    world_size: int = 1
    micro_step: int | None = None  # optimiser rounds in this stage so far (None: stage_step), what ``every`` counts
    split: str = "train"  # the shards' split the stage reads


class Method:
    """Subclass it; ``__init__(model, dataset)`` builds ``networks`` from the recipe's ``[model]`` table and the
    facts of the shards' dataset.json (``speakers``, ``labels``, ``attributes``, ``fps``, ``sample_rate``)."""

    name: ClassVar[str]  # the registry name, and the name of its recipe
    stages: ClassVar[tuple[str, ...]]  # the stages a recipe may list, in their usual order
    loss_terms: ClassVar[dict[str, tuple[str, ...]]]  # stage -> the weights its losses read: the recipe's
    # ``losses`` table of that stage names exactly these (the recipe is their one source)
    inputs: ClassVar[tuple[str, ...]] = ()  # what `avmodels sample` needs: audio, reference, driving, lr
    drivers: ClassVar[tuple[str, ...]] = ()  # of these the user gives one (DAVS: audio or driving)
    outputs: ClassVar[tuple[str, ...]] = ()  # image (a PNG grid) and/or video (an MP4 with sound)
    sample_options: ClassVar[dict[str, tuple[Any, str]]] = {}  # `sample --NAME VALUE`: name -> (default, help)
    main_measures: ClassVar[dict[str, str]] = {}  # eval's measures that say whether it learnt -> "higher" or
    # "lower" (which is better); each beside its ``*_baseline`` and ``*_real``
    driving_asr: ClassVar[str | None] = None  # the recogniser a --driving video's speech is transcribed with

    networks: dict[str, nn.Module]  # trained and checkpointed; the recipe's optimisers name them

    def __init__(self, model: dict, dataset: dict):
        raise NotImplementedError

    @staticmethod
    def view(sample: dict, rng: np.random.Generator | None, **options) -> dict:
        """A decoded shard sample -> the named tensors the step reads (``avmodels.views`` has the toolkit).
        ``rng`` draws training-time choices; None asks for the deterministic ones evaluation uses. A uint8
        tensor is an image: the loader scales it to [-1, 1] on the device. ``options``: the stage's ``view``."""
        raise NotImplementedError

    def load_auxiliary(self, device: torch.device) -> list[str]:
        """Load frozen helper networks from user files (VGG19), never checkpointed; return notes to print."""
        return []

    def begin_stage(self, nets: dict[str, nn.Module], data, ctx: StepContext) -> None:
        """Before a stage's first step, and again when a run resumes inside it (``ctx.stage_step`` > 0 then):
        statistics fitted identically on every rank (a landmark PCA: ``avmodels.data.split_batches`` gives every
        rank the whole split), snapshots of networks. It must not draw from torch's generators (the trainer runs
        it under ``fork_rng``, so it cannot move them)."""

    def micro_batches(self, batch: dict, ctx: StepContext) -> list[dict]:
        """The optimiser rounds one loaded batch gives (HeadGAN: one per 3-frame window of a clip)."""
        return [batch]

    def forward(self, nets: dict[str, nn.Module], batch: dict, ctx: StepContext) -> dict:
        """The step's shared forward pass: what every optimiser's loss reads."""
        raise NotImplementedError

    def loss(self, optimizer: str, nets: dict[str, nn.Module], batch: dict, out: dict, weights: dict[str, float],
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """(the loss ``optimizer`` minimises, floats to log); ``weights`` is the stage's ``losses`` table."""
        raise NotImplementedError

    def after_step(self, nets: dict[str, nn.Module], batch: dict, ctx: StepContext) -> None:
        """After each optimiser round (a moving average of a network's weights)."""

    def picture_rows(self, nets: dict[str, nn.Module], batch: dict, out: dict) -> list[torch.Tensor]:
        """Rows of the training grid: N x 3 x H x W in [-1, 1], real above generated."""
        raise NotImplementedError

    def sample(self, nets: dict[str, nn.Module], inputs, output: str, device, **options) -> torch.Tensor:
        """``image``: N x 3 x H x W faces in [-1, 1]; ``video``: T x 3 x H x W frames at ``inputs.fps``
        (``avmodels.sampling.SampleInputs``); ``options``: ``sample_options``' values."""
        raise NotImplementedError(f"{self.name} trains, but its sampling is not built yet")

    def evaluate(self, nets: dict[str, nn.Module], data, split: str, device, limit: int | None = None):
        """The paper's measures on ``split``, each beside its ceiling (``*_real``) and a trivial baseline:
        an ``avmodels.evaluation.Evaluation``."""
        raise NotImplementedError(f"{self.name} trains, but its evaluation is not built yet")


def unwrapped(network: nn.Module) -> nn.Module:
    """The module itself under torch.compile's and DDP's wrappers."""
    network = getattr(network, "_orig_mod", network)
    return network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network


def is_distributed(network: nn.Module) -> bool:
    """Whether the step sees ``network`` through DDP (which takes one forward per backward)."""
    return isinstance(getattr(network, "_orig_mod", network), nn.parallel.DistributedDataParallel)
