"""The model half of a recipe: ``[model]`` (handed to the method) and ``[train]`` with its ``[[train.stages]]``.

    [train]
    batch_size = 64            # per rank
    [[train.stages]]
    name = "gan"
    epochs = 200               # or steps = N
    init_from = "warmup"       # optional: a stage whose final weights start this one when it is run alone
    losses = { l1 = 50.0 }     # weights handed to the method's loss
    batch_size = 16            # optional per-stage overrides of [train]: batch_size, split,
    view = { images = false }  # and options handed to the method's view (the loader is rebuilt per stage)
    [train.stages.optimizers.discriminator]
    networks = ["discriminator"]
    lr = 4e-4
    betas = [0.5, 0.999]
    every = 1                  # update ratio: step on every k-th training step (micro-batch round)
    schedule = "constant"      # or "cosine" / "linear" decay to 0 by the stage's end, after warmup_steps
    hold = 0.6                 # with a decay: the share of the stage at full rate first (HeadGAN: 6 of 10 epochs)
    stairs = 4                 # with a decay: in this many equal drops at the start of each, not smoothly (HeadGAN)

    [train.init]
    person_encoder = { file = "lightcnn.pt", strip_prefix = "module." }   # a network starts from a user file

Optimisers step in the order the recipe lists them. ``--set key=value`` overrides any value: ``train.batch_size=8``,
``model.image_size=64``, ``train.stages.gan.steps=300`` (stages by name); values are read as TOML.
"""
from __future__ import annotations

import copy
import dataclasses
import math

from avmodels.methods import get_method
from avprep.shard.recipe import RecipeError, apply_override, read_recipe

SCHEDULES = ("constant", "cosine", "linear")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    name: str
    networks: tuple[str, ...]
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    every: int = 1
    schedule: str = "constant"
    warmup_steps: int = 0
    hold: float = 0.0  # share of the stage at full rate before a cosine or linear decay
    stairs: int = 0  # > 0: the decay in this many equal drops, each at the start of its share (0: every update)
    lr_scale: dict = dataclasses.field(default_factory=dict)  # network -> its lr as a multiple of lr (a param group)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    name: str
    optimizers: tuple[OptimizerSpec, ...]
    losses: dict
    steps: int | None = None
    epochs: float | None = None
    init_from: str | None = None
    batch_size: int | None = None  # None: [train] batch_size
    split: str | None = None  # None: [train] split
    view: dict = dataclasses.field(default_factory=dict)  # options for the method's view in this stage

    def total_steps(self, samples_per_epoch: int, batch_size: int, world_size: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * samples_per_epoch / (batch_size * world_size)))

    def batch_size_in(self, config: "TrainConfig") -> int:
        return self.batch_size or config.batch_size

    def split_in(self, config: "TrainConfig") -> str:
        return self.split or config.split

    @property
    def networks(self) -> set[str]:
        return {network for optimizer in self.optimizers for network in optimizer.networks}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    method: str
    document: dict  # the whole recipe after overrides: stored in checkpoints, so a run says what it was
    model: dict
    stages: tuple[StageSpec, ...]
    batch_size: int = 64
    num_workers: int = 2
    seed: int = 0
    split: str = "train"
    shuffle_buffer: int = 1000
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 1000
    grad_clip: float = 0.0  # max gradient norm per optimiser; 0 = off
    precision: str = "auto"  # bf16 autocast on CUDA, fp32 elsewhere
    compile: bool = False
    channels_last: bool = False
    max_bad_samples: int = 100  # damaged samples the loader may skip (each with a warning) before training stops
    init: dict = dataclasses.field(default_factory=dict)  # network -> {file, strip_prefix}: start from user weights


def load_train_config(method: str, recipe: str | None = None, overrides: list[str] = ()) -> TrainConfig:
    """``recipe`` (a name or TOML path; default: the method's shipped recipe) with ``key=value`` overrides."""
    _, document = read_recipe(recipe or method)
    document = copy.deepcopy(document)
    for override in overrides:
        apply_override(document, override)
    return parse_train_config(method, document)


def parse_train_config(method: str, document: dict) -> TrainConfig:
    train = dict(document.get("train", {}))
    stages = train.pop("stages", None)
    if not stages:
        raise RecipeError(f"recipe for {method} has no [[train.stages]]: it holds only the data half")
    known = {field.name for field in dataclasses.fields(TrainConfig)} - {"method", "document", "model", "stages"}
    if set(train) - known:
        raise RecipeError(f"[train]: unknown keys {sorted(set(train) - known)}; known: {sorted(known)}")
    config = TrainConfig(method=method, document=document, model=dict(document.get("model", {})),
                         stages=tuple(_stage(stage) for stage in stages), **train)
    _check(config)
    return config


def _stage(table: dict) -> StageSpec:
    table = dict(table)
    name = table.pop("name", None)
    optimizers = table.pop("optimizers", {})
    known = {"steps", "epochs", "init_from", "losses", "batch_size", "split", "view"}
    if not name or set(table) - known or not optimizers:
        raise RecipeError(f"stage {name!r}: needs a name and optimizers, and only {sorted(known)} besides; "
                          f"got {sorted(table)}")
    specs = []
    for optimizer, settings in optimizers.items():
        settings = dict(settings)
        unknown = set(settings) - {field.name for field in dataclasses.fields(OptimizerSpec)}
        if unknown or "networks" not in settings or "lr" not in settings:
            raise RecipeError(f"stage {name}, optimizer {optimizer}: needs networks and lr; unknown {sorted(unknown)}")
        settings["networks"] = tuple(settings["networks"])
        settings["betas"] = tuple(settings.get("betas", (0.9, 0.999)))
        specs.append(OptimizerSpec(name=optimizer, **settings))
    return StageSpec(name=name, optimizers=tuple(specs), losses=dict(table.pop("losses", {})),
                     view=dict(table.pop("view", {})), **table)


def _check(config: TrainConfig) -> None:
    """Every problem of the recipe at once, before any shard is opened."""
    problems = []
    names = [stage.name for stage in config.stages]
    if len(set(names)) != len(names):
        problems.append(f"stage names must differ: {names}")
    method = get_method(config.method)
    for i, stage in enumerate(config.stages):
        if stage.name not in method.stages:
            problems.append(f"stage {stage.name!r}: {config.method} has the stages {list(method.stages)}")
        else:
            terms = method.loss_terms[stage.name]
            unknown, missing = sorted(set(stage.losses) - set(terms)), [t for t in terms if t not in stage.losses]
            if unknown or missing:
                problems.append(f"stage {stage.name}: losses must weigh exactly {list(terms)} (the recipe is their "
                                f"one source); unknown {unknown}, missing {missing}")
        if (stage.steps is None) == (stage.epochs is None):
            problems.append(f"stage {stage.name}: give steps or epochs (one of them)")
        if stage.batch_size is not None and stage.batch_size < 1:
            problems.append(f"stage {stage.name}: batch_size >= 1")
        if stage.init_from is not None and stage.init_from not in names[:i]:
            problems.append(f"stage {stage.name}: init_from must name an earlier stage, got {stage.init_from!r}")
        for optimizer in stage.optimizers:
            if (optimizer.schedule not in SCHEDULES or optimizer.every < 1 or optimizer.lr <= 0
                    or not 0 <= optimizer.hold < 1 or optimizer.stairs < 0):
                problems.append(f"stage {stage.name}, optimizer {optimizer.name}: schedule one of {SCHEDULES}, "
                                "every >= 1, lr > 0, 0 <= hold < 1, stairs >= 0")
            if set(optimizer.lr_scale) - set(optimizer.networks) or not all(
                    isinstance(v, (int, float)) and v > 0 for v in optimizer.lr_scale.values()):
                problems.append(f"stage {stage.name}, optimizer {optimizer.name}: lr_scale maps some of its networks "
                                f"{list(optimizer.networks)} to multipliers > 0")
    if config.precision not in PRECISIONS:
        problems.append(f"precision must be one of {PRECISIONS}")
    if config.batch_size < 1 or config.num_workers < 0:
        problems.append("batch_size >= 1 and num_workers >= 0")
    for network, spec in config.init.items():
        if not isinstance(spec, dict) or "file" not in spec or set(spec) - {"file", "strip_prefix"}:
            problems.append(f"train.init.{network} must be {{ file = \"...\", strip_prefix = \"...\" (optional) }}")
    if problems:
        raise RecipeError(f"recipe for {config.method}: " + "; ".join(problems))
