"""The generic trainer: stages of optimisers over a method's networks, fed by the shard loader.

One training step: take a batch, split it into the method's optimiser rounds (``micro_batches``: one round for
most methods), and in each round run the method's shared forward pass, then for every optimiser of the stage
that is due (``every`` counts rounds) compute its loss, step it and its LR schedule. Checkpoints every
``checkpoint_every`` steps and at the end hold everything needed to continue exactly: on CPU with the same seed a
resumed run draws the same batches, dropout masks and updates as one that never stopped.

Output folder: ``checkpoint.pt`` (latest), ``stage-<name>.pt`` (weights at each stage's end), ``metrics.jsonl``,
``samples/step-NNNNNNN.png`` (a grid every ``sample_every`` steps), ``tensorboard/`` (when installed),
``summary.json``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Iterator

import torch
from torch.nn.parallel import DistributedDataParallel

from avmodels import checkpoints
from avmodels.data import Prefetcher, make_dataset, make_loader, view_with
from avmodels.methods import get_method
from avmodels.methods.base import Method, StepContext
from avmodels.pictures import grid
from avmodels.training.checkpoint import CheckpointKeeper, set_rng_state
from avmodels.training.config import OptimizerSpec, StageSpec, TrainConfig
from avmodels.training.distributed import Node, gather, start_node, stop_node
from avmodels.training.logs import RunLog
from avprep.shard.folder import ShardDir


@dataclasses.dataclass
class Position:
    """How far the run is: steps overall and in the current stage, and where in the data."""

    step: int = 0
    stage: int = 0
    stage_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    micro_step: int = 0  # optimiser rounds in the stage (more than stage_step when a method splits batches)
    damaged: int = 0  # damaged samples the loader skipped in the run so far (this rank's)

    def context(self, stage: StageSpec, node: Node, split: str) -> StepContext:
        return StepContext(stage.name, self.stage_step, self.step, self.epoch, node.rank, node.world_size,
                           self.micro_step, split)

    def next_stage(self) -> None:
        """The next stage reads its own data from the start."""
        self.stage, self.stage_step, self.micro_step, self.epoch, self.batches_in_epoch = self.stage + 1, 0, 0, 0, 0


def train(config: TrainConfig, data: str | Path, out: str | Path, *, max_steps: int | None = None,
          resume: bool = False, start_stage: str | None = None, device: str | None = None) -> dict:
    """Train ``config.method`` on the shards in ``data``; return the run summary (also ``out/summary.json``)."""
    node, out, finished = start_node(device), Path(out), False
    try:
        summary = _train(config, ShardDir(data), out, node, max_steps, resume, start_stage)
        finished = True
        return summary
    finally:
        stop_node(finished)


def _train(config: TrainConfig, shards: ShardDir, out: Path, node: Node, max_steps: int | None, resume: bool,
           start_stage: str | None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    method, nets, position, saved, keeper = restore(config, shards.info, out, node, resume, start_stage)
    for note in method.load_auxiliary(node.device):
        if node.main:
            print(f"note: {note}")
    torch.manual_seed(config.seed * 1000 + node.rank + 1)  # training randomness differs between ranks
    if saved is not None:
        set_rng_state(saved["rng"][node.rank])
    log = RunLog(out, config.log_every, position.step if resume or start_stage else None, enabled=node.main)
    autocast = _autocast(config, node)
    stopped, batches = False, None
    try:
        for stage_index in range(position.stage, len(config.stages)):
            stage, split = config.stages[stage_index], config.stages[stage_index].split_in(config)
            total = stage.total_steps(shards.samples(split), stage.batch_size_in(config), node.world_size)
            if batches is not None:
                batches.close()  # the previous stage's loader and its workers
            batches = _batches(config, method, stage, shards, node, position)
            optimizers, schedulers = make_optimizers(stage, nets, lambda t=max(1, total): position.stage_step / t)
            if saved is not None and saved["stage"] == stage_index:
                for name in optimizers:
                    optimizers[name].load_state_dict(saved["optimizers"][name])
                    schedulers[name].load_state_dict(saved["schedulers"][name])
            train_nets = prepare_networks(nets, stage, config, node)
            with torch.random.fork_rng(devices=[node.device] if node.device.type == "cuda" else []):
                method.begin_stage(nets, shards.path, position.context(stage, node, split))  # draws nothing of ours
            log.begin_stage(f"{config.method}: {stage.name}", total, position.stage_step)
            while position.stage_step < total and not stopped:
                started = time.perf_counter()
                batch = _channels_last(next(batches)) if config.channels_last else next(batches)
                waited = time.perf_counter() - started
                losses: dict[str, list[float]] = {}
                for part in method.micro_batches(batch, position.context(stage, node, split)):
                    ctx = position.context(stage, node, split)
                    out_step, terms = train_step(method, nets, train_nets, part, stage, optimizers, schedulers, ctx,
                                                 config.grad_clip, autocast)
                    method.after_step(nets, part, ctx)
                    position.micro_step += 1
                    for name, value in terms.items():
                        losses.setdefault(name, []).append(value)
                position.step, position.stage_step = position.step + 1, position.stage_step + 1
                stopped = max_steps is not None and position.step >= max_steps
                log.step(step=position.step, stage=stage.name, epoch=position.epoch,
                         samples=len(batch["key"]) * node.world_size, seconds=time.perf_counter() - started,
                         waited=waited, losses={name: sum(v) / len(v) for name, v in losses.items()},
                         lrs={name: scheduler.get_last_lr()[0] for name, scheduler in schedulers.items()},
                         last=stopped or position.stage_step == total, damaged=position.damaged)
                if position.step % config.sample_every == 0:
                    log.picture(grid(method.picture_rows(train_nets, part, out_step)), position.step)
                if position.step % config.checkpoint_every == 0 or stopped or position.stage_step == total:
                    keeper.save(optimizers, schedulers, position, stage.networks)
            if position.stage_step < total:
                break
            keeper.save_stage(stage.name)
            position.next_stage()
            if stopped:
                break
    finally:
        log.close()
    return _summary(out, config, nets, position, log, node)


def restore(config: TrainConfig, info: dict, out: Path, node: Node, resume: bool,
            start_stage: str | None) -> tuple[Method, dict, Position, dict | None, CheckpointKeeper]:
    """The method, its networks and the position the run starts from: networks built from the seed (alike on every
    rank), then user weights (``train.init``), then ``--resume``'s checkpoint or ``--stage``'s ``init_from``
    weights; with the checkpoint resumed from (None for a new start) and the keeper of the run's checkpoints."""
    torch.manual_seed(config.seed)
    method = get_method(config.method)(config.model, info)
    nets = {name: net.to(node.device) for name, net in method.networks.items()}
    for name, spec in config.init.items():
        if name not in nets:
            raise KeyError(f"train.init.{name}: {config.method} has no network {name!r}; it has {sorted(nets)}")
        nets[name].load_state_dict(checkpoints.load_user_weights(spec["file"], f"train.init.{name}",
                                                                  spec.get("strip_prefix", "")))
    if not resume and start_stage is None:
        return method, nets, Position(), None, CheckpointKeeper.fresh(out, config, info, nets, node.main)
    position, saved, kept = Position(), None, {}
    if resume:
        saved = checkpoints.load(out / "checkpoint.pt")
        if saved["method"] != config.method:
            raise ValueError(f"{out}/checkpoint.pt is a {saved['method']} run, not {config.method}")
        checkpoints.load_networks(nets, saved)
        kept = saved.get("kept", {})
        position = Position(**{field: saved[field] for field in Position.__dataclass_fields__ if field in saved})
        if "micro_step" not in saved:  # a checkpoint from before micro-batches: one round per step
            position.micro_step = position.stage_step
    else:
        position.stage = _stage_index(config, start_stage)
        source = config.stages[position.stage].init_from
        if source is not None:
            checkpoints.load_networks(nets, checkpoints.load(out / f"stage-{source}.pt"))
        if (out / "checkpoint.pt").is_file():  # a later stage of an earlier run: its history and steps go on
            previous = checkpoints.load(out / "checkpoint.pt")
            position.step = previous["step"]
            if source is None:
                checkpoints.load_networks(nets, previous)
    return method, nets, position, saved, CheckpointKeeper(out, config, info, nets, node.main, kept)


def train_step(method: Method, nets: dict, train_nets: dict, batch: dict, stage: StageSpec, optimizers: dict,
               schedulers: dict, ctx: StepContext, grad_clip: float = 0.0,
               autocast=contextlib.nullcontext) -> tuple[dict, dict[str, float]]:
    """One round: the method's shared forward, then each due optimiser's loss, backward, clipping and update."""
    losses = {}
    with autocast():
        out = method.forward(train_nets, batch, ctx)
    for spec in stage.optimizers:
        if (ctx.stage_step if ctx.micro_step is None else ctx.micro_step) % spec.every:
            continue
        with autocast():
            loss, terms = method.loss(spec.name, train_nets, batch, out, stage.losses, ctx)
        optimizers[spec.name].zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(_parameters(nets, spec), grad_clip)
        optimizers[spec.name].step()
        schedulers[spec.name].step()
        losses.update(terms)
    return out, losses


def _autocast(config: TrainConfig, node: Node):
    """bf16 autocast where the recipe asks for it (``auto``: on CUDA), else nothing."""
    precision = torch.bfloat16 if config.precision == "bf16" or (
        config.precision == "auto" and node.device.type == "cuda") else None
    return (lambda: torch.autocast(node.device.type, dtype=precision)) if precision else contextlib.nullcontext


def _batches(config: TrainConfig, method: Method, stage: StageSpec, shards: ShardDir, node: Node,
             position: Position) -> Iterator[dict]:
    """Endless batches of a stage on the device, epoch after epoch, keeping ``position`` on the last batch handed
    out. The stage's batch size, split and view options apply.

    Resampled shards with an epoch of whole batches per worker make every rank take the same number of batches
    and make the position exact (``ShardStream.resume``).
    """
    batch_size, split = stage.batch_size_in(config), stage.split_in(config)
    per_round = batch_size * max(1, config.num_workers)
    epoch_samples = max(per_round, shards.samples(split) // node.world_size // per_round * per_round)
    dataset = make_dataset(shards.urls(split), view_with(method.view, **stage.view), seed=config.seed,
                           shuffle_buffer=config.shuffle_buffer, resampled=True, epoch_samples=epoch_samples)
    dataset.resume(position.epoch, position.batches_in_epoch, batch_size)
    loader = Prefetcher(make_loader(dataset, batch_size, config.num_workers), node.device)
    counted = position.damaged
    while True:
        for batch in loader:
            position.batches_in_epoch += 1
            position.damaged = counted + dataset.skipped
            if position.damaged > config.max_bad_samples:
                raise ValueError(f"{position.damaged} damaged samples skipped, more than train.max_bad_samples = "
                                 f"{config.max_bad_samples} (the warnings above name them): rebuild or re-copy "
                                 "those shards, or raise the bound")
            yield batch
        position.epoch, position.batches_in_epoch = position.epoch + 1, 0


def make_optimizers(stage: StageSpec, nets: dict, progress=lambda: 0.0) -> tuple[dict, dict]:
    """Adam per optimiser spec with its LR schedule; ``progress()`` says how far the stage is, in [0, 1]. Each
    optimiser given ``lr_scale`` has a parameter group per network, at ``lr`` times its scale (1 unless given)."""
    optimizers, schedulers = {}, {}
    for spec in stage.optimizers:
        unknown = set(spec.networks) - set(nets)
        if unknown:
            raise KeyError(f"stage {stage.name}, optimizer {spec.name}: no networks {sorted(unknown)}; "
                           f"the method has {sorted(nets)}")
        groups = [{"params": list(nets[name].parameters()), "lr": spec.lr * spec.lr_scale.get(name, 1.0)}
                  for name in spec.networks] if spec.lr_scale else _parameters(nets, spec)
        optimizers[spec.name] = torch.optim.Adam(groups, lr=spec.lr, betas=spec.betas,
                                                 weight_decay=spec.weight_decay, fused=True)
        schedulers[spec.name] = torch.optim.lr_scheduler.LambdaLR(optimizers[spec.name], _schedule(spec, progress))
    return optimizers, schedulers


def _schedule(spec: OptimizerSpec, progress):
    """LR factor per update: linear warm-up over the first ``warmup_steps`` updates; then constant, or held for
    the ``hold`` share of the stage and decayed (cosine or linear) to zero by its end, smoothly or in ``stairs``
    equal drops, each at the start of its share (HeadGAN's per-epoch decay: 0.75, 0.5, 0.25, 0 in its last 4)."""
    def factor(update: int) -> float:
        if update < spec.warmup_steps:
            return (update + 1) / spec.warmup_steps
        decayed = min(1.0, max(0.0, (progress() - spec.hold) / (1 - spec.hold)))
        if spec.stairs and progress() >= spec.hold:
            decayed = min(1.0, (math.floor(decayed * spec.stairs + 1e-9) + 1) / spec.stairs)  # 1e-9: 0.7 - 0.6
        if spec.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * decayed))
        return 1.0 - decayed if spec.schedule == "linear" else 1.0
    return factor


def _parameters(nets: dict, spec: OptimizerSpec) -> list[torch.nn.Parameter]:
    return [parameter for name in spec.networks for parameter in nets[name].parameters()]


def prepare_networks(nets: dict, stage: StageSpec, config: TrainConfig, node: Node) -> dict:
    """Networks as this stage trains them: trained ones in train mode (DDP-wrapped across ranks, compiled when
    asked), the others frozen in eval mode."""
    prepared = {}
    for name, net in nets.items():
        trained = name in stage.networks
        net.train(trained).requires_grad_(trained)
        if config.channels_last:
            net.to(memory_format=torch.channels_last)
        if trained and node.world_size > 1:
            net = DistributedDataParallel(net, device_ids=[node.device.index] if node.device.type == "cuda" else None)
        prepared[name] = torch.compile(net) if config.compile else net
    return prepared


def _channels_last(batch: dict) -> dict:
    return {key: value.contiguous(memory_format=torch.channels_last) if torch.is_tensor(value) and value.dim() == 4
            else value for key, value in batch.items()}


def _stage_index(config: TrainConfig, name: str) -> int:
    names = [stage.name for stage in config.stages]
    if name not in names:
        raise KeyError(f"no stage {name!r}; {config.method} has {names}")
    return names.index(name)


def _summary(out: Path, config: TrainConfig, nets: dict, position: Position, log: RunLog, node: Node) -> dict:
    digests = gather(parameters_digest(nets))
    summary = {"method": config.method, "steps": position.step, "stages_done": position.stage,
               "world_size": node.world_size, "weights_sha1_per_rank": digests, "last_metrics": log.last_row,
               "damaged_samples_skipped": position.damaged,
               "checkpoint": str(out / "checkpoint.pt"), "metrics": str(out / "metrics.jsonl"),
               "samples": str(out / "samples")}
    if node.main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def parameters_digest(nets: dict) -> str:
    """The digest of every network's parameters: equal on all ranks when DDP kept them in step (buffers such as
    batch-norm statistics may differ between ranks after a step)."""
    return checkpoints.state_digest({f"{name}.{key}": parameter.detach() for name in sorted(nets)
                                     for key, parameter in nets[name].named_parameters()})
