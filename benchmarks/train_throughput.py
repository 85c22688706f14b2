"""Wav2Pix training throughput: samples/s and the share of step time spent waiting for data, at batch 64.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--steps 8] [--out benchmarks/results/train.md]

Real shards (demo corpus -> extract -> shard wav2pix), the real trainer (``avmodels.training.train``) with the
shipped recipe; only batch size, step count and, for the second row, the 64 px model are changed. The first two
steps (worker start-up, allocator warm-up) are left out; the rest are averaged. On CUDA the recipe's default
precision applies (bf16 autocast).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from _bench import publish
from avmodels.training.config import load_train_config
from avmodels.training.trainer import train
from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import RunOptions, run_extract
from avprep.shard.recipe import load_recipe
from avprep.shard.run import run_shard
from avprep.synth.catalogue import make_demo_corpus


def build(tmp: Path) -> Path:
    make_demo_corpus(tmp / "videos", speakers=4, clips_per_speaker=3, seconds=8.0, size=(640, 360))
    run_extract(discover([tmp / "videos"]), tmp / "prep", ExtractConfig(morphable=False, audio_features=False),
                RunOptions(jobs=2))
    run_shard(tmp / "prep", tmp / "shards", load_recipe("wav2pix"), max_count=16, jobs=2)
    return tmp / "shards"


def measure(shards: Path, out: Path, image_size: int, steps: int, workers: int, device: str) -> dict:
    config = load_train_config("wav2pix", overrides=[
        f"model.image_size={image_size}", "train.batch_size=64", f"train.num_workers={workers}",
        "train.log_every=1", "train.sample_every=100000", "train.checkpoint_every=100000"])
    train(config, shards, out, max_steps=steps, device=device)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][2:]
    seconds = sum(64 / row["samples_per_s"] for row in rows)
    waited = sum(64 / row["samples_per_s"] * row["data_wait"] for row in rows)
    return {"samples_per_s": 64 * len(rows) / seconds, "step_s": seconds / len(rows), "data_wait": waited / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = build(Path(tmp))
        where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        rows = [f"Wav2Pix at batch 64 on {where}, {args.workers} loader worker(s), mean of steps 3-{args.steps}.", "",
                "| model | samples/s | s/step | data wait |", "|---|---:|---:|---:|"]
        for size in (128, 64):
            result = measure(shards, Path(tmp) / f"run{size}", size, args.steps, args.workers, args.device)
            label = f"{size} px" + (" (official)" if size == 128 else "")
            rows.append(f"| {label} | {result['samples_per_s']:.1f} | {result['step_s']:.2f} | "
                        f"{result['data_wait']:.1%} |")
    publish(rows, f"Training throughput ({args.device})", args.out)


if __name__ == "__main__":
    main()
