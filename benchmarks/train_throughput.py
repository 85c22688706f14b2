"""Training throughput of every method and stage: samples/s and the share of step time spent waiting for data.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--steps 8] [--out benchmarks/results/train.md]

Real shards (demo corpus -> extract -> shard per method), the real trainer (``avmodels.training.train``) with the
shipped recipes at their official batch sizes (Wav2Pix 64; ATVGnet's at_net 16, vg_net 10; DAVS 16, on an
LRW-shaped demo tree for its word labels; HeadGAN 6, characters from pocketsphinx, without the VGG terms, whose
weights cannot be had here; Ear-SR 32, every stage started on its own); only the step count and, for the rows
that say so, the model size are changed. Rows marked CUDA-only (full-size DAVS, HeadGAN and Ear-SR: DAVS's
word_pretrain at batch 16 runs FAN on 192 frames of 256 px, more memory than a 24 GiB CPU machine has; Ear-SR's
networks hold 900 M parameters; the others take minutes per step) run with --device cuda. The first two steps
(worker start-up, allocator warm-up) are left out; the rest are averaged. On CUDA the recipe's default precision
applies (bf16 autocast).
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
from avprep.synth.catalogue import make_demo_corpus, make_lrw_demo

HEADGAN_CLIPS_S = 4.0


def build(tmp: Path, methods: set[str]) -> dict[str, Path]:
    """Shards of each of ``methods``, from demo media made, extracted and sharded here."""
    if methods & {"wav2pix", "atvgnet", "ear_sr"}:
        make_demo_corpus(tmp / "videos", speakers=4, clips_per_speaker=3, seconds=8.0, size=(640, 360))
        run_extract(discover([tmp / "videos"]), tmp / "prep", ExtractConfig(morphable=False), RunOptions(jobs=2))
    for method in methods & {"wav2pix", "atvgnet", "ear_sr"}:
        run_shard(tmp / "prep", tmp / method, load_recipe(method), max_count=16, jobs=2)
    if "davs" in methods:
        make_lrw_demo(tmp / "lrw", words=8, speakers=6, size=(640, 360))
        run_extract(discover([tmp / "lrw"]), tmp / "lrw-prep", ExtractConfig(morphable=False), RunOptions(jobs=2))
        run_shard(tmp / "lrw-prep", tmp / "davs", load_recipe("davs", ["split.by=dataset"]), max_count=16, jobs=2)
    if "headgan" in methods:
        make_demo_corpus(tmp / "heads", speakers=2, clips_per_speaker=2, seconds=HEADGAN_CLIPS_S, size=(640, 360))
        run_extract(discover([tmp / "heads"]), tmp / "heads-prep", ExtractConfig(asr="pocketsphinx"),
                    RunOptions(jobs=2))
        run_shard(tmp / "heads-prep", tmp / "headgan", load_recipe("headgan", ["split.by=video"]), max_count=16,
                  jobs=2)
    return {method: tmp / method for method in methods}


def measure(shards: Path, out: Path, method: str, overrides: list[str], steps: int, workers: int, device: str,
            stage: str | None = None) -> dict:
    config = load_train_config(method, overrides=[
        *overrides, f"train.num_workers={workers}", "train.log_every=1", "train.sample_every=100000",
        "train.checkpoint_every=100000"])
    batch = next(s for s in config.stages if stage in (None, s.name)).batch_size_in(config)
    train(config, shards, out, max_steps=steps, device=device, start_stage=stage)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][2:]
    seconds = sum(batch / row["samples_per_s"] for row in rows)
    waited = sum(batch / row["samples_per_s"] * row["data_wait"] for row in rows)
    return {"batch": batch, "samples_per_s": batch * len(rows) / seconds, "step_s": seconds / len(rows),
            "data_wait": waited / seconds}


CASES = [  # (label, method, overrides, stage, CUDA only)
    ("Wav2Pix 128 px (official)", "wav2pix", ["train.batch_size=64"], None, False),
    ("Wav2Pix 64 px", "wav2pix", ["train.batch_size=64", "model.image_size=64"], None, False),
    ("ATVGnet at_net (official)", "atvgnet", [], "at_net", False),
    ("ATVGnet vg_net, 128 px (official)", "atvgnet", [], "vg_net", False),
    ("DAVS word_pretrain (official)", "davs", [], "word_pretrain", True),
    ("DAVS word_pretrain, width 0.125", "davs", ["model.width=0.125"], "word_pretrain", False),
    ("DAVS disentangle (official)", "davs", [], "disentangle", True),
    ("DAVS disentangle, width 0.125 (quick start)", "davs", ["model.width=0.125"], "disentangle", False),
    ("HeadGAN gan (official, no VGG), 6-frame clips = 4 G steps", "headgan", ['model.vgg19=""'], None, True),
    ("HeadGAN gan, width 0.125, no VGG", "headgan", ['model.vgg19=""', "model.width=0.125"], None, False),
    *[(f"Ear-SR {stage}{size}", "ear_sr", ['model.vgg19=""', *width], stage, not width)
      for stage in ("stylegan", "invert", "invert_joint", "encoders_lr", "encoders_audio", "fuse")
      for size, width in ((" (official, no VGG)", []), (", width 0.125, no VGG", ["model.width=0.125"]))],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.md")
    parser.add_argument("--only", nargs="*", help="Rows whose label starts with one of these (e.g. DAVS).")
    args = parser.parse_args()
    chosen = [(i, case) for i, case in enumerate(CASES)
              if (not args.only or case[0].startswith(tuple(args.only))) and (not case[4] or args.device == "cuda")]
    with tempfile.TemporaryDirectory() as tmp:
        shards = build(Path(tmp), {case[1] for _, case in chosen})
        where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        rows = [f"The shipped recipes on {where}, {args.workers} loader worker(s), mean of steps 3-{args.steps}; "
                "ATVGnet's samples are 16-frame clips, DAVS's 25-frame clips (12 classified, 6 generated, 20 for the "
                "identity discriminator).", "",
                "| method, stage | batch | samples/s | s/step | data wait |", "|---|---:|---:|---:|---:|"]
        for i, (label, method, overrides, stage, _) in chosen:
            result = measure(shards[method], Path(tmp) / f"run{i}", method, overrides, args.steps, args.workers,
                             args.device, stage)
            rows.append(f"| {label} | {result['batch']} | {result['samples_per_s']:.1f} | {result['step_s']:.2f} | "
                        f"{result['data_wait']:.1%} |")
    publish(rows, f"Training throughput ({args.device})", args.out)


if __name__ == "__main__":
    main()
