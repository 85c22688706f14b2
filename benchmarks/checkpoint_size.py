"""What Ear-SR's per-step checkpoints weigh and cost at full size: leaving out the networks a stage file (or the
seed) already holds, against writing every network each time.

    python benchmarks/checkpoint_size.py [--stages stylegan fuse] [--out benchmarks/results/checkpoint.md]

Ear-SR's networks at full size on the CPU (3.64 GB of float32). For each stage, the trainer's own
``CheckpointKeeper.save`` writes ``checkpoint.pt`` with the stage's optimisers (Adam, their state filled by one
step) after the networks the stage changes have moved (those it trains, plus the moving-average generator in
``stylegan`` and the snapshot and plateau state in ``invert_joint``): once with ``kept`` naming the stage file
before it (as the trainer does; in ``stylegan``, the networks as built), once with nothing kept (every network,
as before).
Columns: the file's size, seconds to write it (with the SHA-1 of the frozen networks, and fsync) and to load it
back whole (with the SHA-1 of the networks taken from the stage file or rebuilt), each the best of two rounds run
in alternating order (a process's first large write is slower), the disk flushed before each write.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from _bench import publish

from avmodels import checkpoints
from avmodels.methods.ear_sr import EarSR
from avmodels.training.checkpoint import CheckpointKeeper
from avmodels.training.config import load_train_config
from avmodels.training.trainer import Position, make_optimizers

CHANGED_OUTSIDE_OPTIMISERS = {"stylegan": ("generator_ema",), "invert_joint": ("generator_init", "regulariser")}
DATASET = {"speakers": ["a", "b"]}


def measure(folder: Path, stage_name: str) -> list[str]:
    config = load_train_config("ear_sr")
    stage = next(s for s in config.stages if s.name == stage_name)
    torch.manual_seed(config.seed)
    nets = EarSR(config.model, DATASET).networks
    first = stage_name == config.stages[0].name
    where = checkpoints.INITIAL if first else "stage-before.pt"
    kept = {name: [where, checkpoints.state_digest(net.state_dict())] for name, net in nets.items()}
    if not first:
        checkpoints.save_atomic(checkpoints.weights("ear_sr", config.document, DATASET, nets), folder / where)
    optimizers, schedulers = make_optimizers(stage, nets)
    for name in (*stage.networks, *CHANGED_OUTSIDE_OPTIMISERS.get(stage_name, ())):
        for parameter in nets[name].parameters():
            parameter.grad = torch.zeros_like(parameter)
        for tensor in (*nets[name].parameters(), *nets[name].buffers()):
            tensor.data.add_(1e-3)  # the stage moved it
    for optimizer in optimizers.values():
        optimizer.step()  # Adam's moments exist, as in a checkpoint of a running stage
    variants = {"leaves out what is kept": kept, "every network": {}}
    times = {label: [] for label in variants}
    for label in [*variants, *reversed(variants)]:  # twice, in both orders: a process's first write is slower
        os.sync()  # earlier writes flushed: each write starts with the disk idle
        started = time.perf_counter()
        CheckpointKeeper(folder, config, DATASET, nets, True, variants[label]).save(optimizers, schedulers, Position(),
                                                                                    stage.networks)
        written = time.perf_counter() - started
        started = time.perf_counter()
        checkpoints.load_networks(nets, checkpoints.load(folder / "checkpoint.pt"))  # kept networks: SHA-1 checked
        times[label].append((written, time.perf_counter() - started))
    rows = []
    for label, table in variants.items():
        CheckpointKeeper(folder, config, DATASET, nets, True, table).save(optimizers, schedulers, Position(),
                                                                          stage.networks)
        stored = sorted(torch.load(folder / "checkpoint.pt", weights_only=True, mmap=True)["networks"])
        size = (folder / "checkpoint.pt").stat().st_size / 1e9
        written, read = (min(pair[i] for pair in times[label]) for i in (0, 1))
        rows.append(f"| {stage_name} | {label} | {', '.join(stored)} | {size:.2f} | {written:.1f} | {read:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", default=[s.name for s in load_train_config("ear_sr").stages])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "checkpoint.md")
    args = parser.parse_args()
    rows = ["| stage | checkpoint.pt | networks in it | GB | write s | load s |", "|---|---|---|---:|---:|---:|"]
    for stage in args.stages:
        with tempfile.TemporaryDirectory() as folder:
            rows += measure(Path(folder), stage)
    publish(rows, f"Ear-SR per-step checkpoints at full size ({torch.get_num_threads()} CPU threads)", args.out)


if __name__ == "__main__":
    main()
