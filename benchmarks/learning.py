"""Does a method learn? A reduced configuration trains on a demo corpus big enough to generalise from, is evaluated
on held-out data along the way, and its main measures are set beside the trivial baseline and the real data.

    python benchmarks/learning.py --method NAME --out DIR [--prep PREP] [--results benchmarks/results/learning.md]

Each method's configuration (``CONFIGS``): the demo corpus (more speakers and clips than its quick start; held-out
clips of seen speakers, or unseen speakers where the method claims them), the reduced model (width, resolution),
the steps of each stage, and the points of the curve; at most 30 minutes on 2 CPU cores, corpus included. With
``--prep``, the same configuration trains on a user's extracted corpus instead of the demo one.

DIR keeps everything: ``videos/`` and ``prep/`` (the demo), ``shards/``, ``run/`` (the checkpoint, metrics.jsonl,
training grids), ``curve.jsonl`` and ``curve/`` (one evaluation per point), ``eval.json`` / ``eval.png`` /
``eval/`` (the last point's evaluation, as ``avmodels eval`` writes it) and ``learning.md`` (the curve and the
final table, also merged into ``--results`` under the method's heading).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from avmodels.evaluation import headline
from avmodels.methods import get_method
from avmodels.training.config import load_train_config
from avmodels.training.trainer import train
from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import RunOptions, run_extract
from avprep.shard.recipe import load_recipe
from avprep.shard.run import run_shard
from avprep.synth.catalogue import make_demo_corpus, make_lrw_demo

RESULTS = Path(__file__).parent / "results" / "learning.md"

# corpus: ("demo", make_demo_corpus options) or ("lrw", make_lrw_demo options); extract: ExtractConfig fields;
# shard / train: recipe overrides; steps: each stage's steps, in order; points: the overall steps evaluated along
# the run (the last is the end); split: the held-out split the curve and the final evaluation read; limit: its
# samples, at most.
CONFIGS = {
    "wav2pix": {  # held-out videos of the training speakers (the paper's closed set)
        "corpus": ("demo", {"speakers": 7, "clips_per_speaker": 5, "seconds": 8.0}),
        "extract": {"morphable": False},
        "shard": [],
        "train": ["model.image_size=64", "train.batch_size=16"],
        "steps": {"gan": 1500},
        "points": [300, 600, 900, 1200, 1500], "split": "test", "limit": 64,
    },
    "atvgnet": {  # unseen speakers (the recipe splits by speaker)
        "corpus": ("demo", {"speakers": 7, "clips_per_speaker": 4, "seconds": 8.0}),
        "extract": {"morphable": False},
        "shard": [],
        "train": ["model.image_size=64", "model.width=16", "train.stages.at_net.batch_size=16",
                  "train.stages.vg_net.batch_size=8"],
        "steps": {"at_net": 300, "vg_net": 600},
        "points": [300, 450, 600, 750, 900], "split": "test", "limit": 24,
    },
    "davs": {  # LRW-shaped: every word said by 7 faces, the last face's clips the test split (an unseen speaker)
        "corpus": ("lrw", {"words": 12, "speakers": 7}),
        "extract": {"morphable": False},
        "shard": ["split.by=dataset"],
        "train": ["model.width=0.125", "train.batch_size=8"],
        "start_stage": "word_pretrain",  # LRW has no speaker ids: no pid_pretrain, as the quick start
        "steps": {"word_pretrain": 200, "disentangle": 30},
        "points": [100, 200, 230], "split": "test", "limit": 12,
    },
    "headgan": {  # one-shot self-reenactment of unseen speakers, at 128 px (the recipe's 256 px: 4 times the time)
        "corpus": ("demo", {"speakers": 7, "clips_per_speaker": 3, "seconds": 8.0}),
        "extract": {"asr": "pocketsphinx"},
        "shard": ["data.image_size=128"],
        "train": ["model.width=0.125", 'model.vgg19=""', "train.batch_size=4"],
        "steps": {"gan": 400},
        "points": [80, 160, 240, 320, 400], "split": "test", "limit": 6,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True, choices=sorted(CONFIGS))
    parser.add_argument("--out", type=Path, required=True, help="Folder for the corpus, shards, run and results.")
    parser.add_argument("--prep", type=Path, help="An extracted corpus (avprep extract) instead of the demo one.")
    parser.add_argument("--results", type=Path, default=RESULTS, help="The Markdown table the result is merged into.")
    args = parser.parse_args()
    config, out, started = CONFIGS[args.method], args.out, time.monotonic()
    prep = args.prep or demo_prep(config, out)
    shards = out / "shards"
    if not (shards / "dataset.json").is_file():
        run_shard(prep, shards, load_recipe(args.method, config["shard"]), jobs=2)
    ready = time.monotonic() - started
    curve = learning_curve(args.method, config, shards, out)
    report = table(args.method, config, curve, ready, time.monotonic() - started, args.prep)
    (out / "learning.md").write_text(report)
    merge(args.results, args.method, report)
    print(report)


def demo_prep(config: dict, out: Path) -> Path:
    """The configuration's demo corpus, made and extracted under ``out`` (kept: a second run reuses them)."""
    kind, options = config["corpus"]
    (make_demo_corpus if kind == "demo" else make_lrw_demo)(out / "videos", **options)
    run_extract(discover([out / "videos"]), out / "prep", ExtractConfig(**config["extract"]), RunOptions(jobs=2))
    return out / "prep"


def learning_curve(method: str, config: dict, shards: Path, out: Path) -> list[dict]:
    """Train to each point of the curve in turn (resuming exactly), evaluating the held-out split at each."""
    overrides = [*config["train"], "train.num_workers=1", "train.log_every=25",
                 *(f"train.stages.{stage}.steps={steps}" for stage, steps in config["steps"].items())]
    train_config = load_train_config(method, overrides=overrides)
    curve_path, curve = out / "curve.jsonl", []
    if curve_path.is_file():  # a run stopped part-way resumes at its next point
        curve = [json.loads(line) for line in curve_path.read_text().splitlines()]
    for step in config["points"][len(curve):]:
        began = time.monotonic()
        resuming = (out / "run" / "checkpoint.pt").is_file()
        train(train_config, shards, out / "run", max_steps=step, resume=resuming,
              start_stage=None if resuming else config.get("start_stage"))
        trained = time.monotonic() - began
        written = out / "eval.json" if step == config["points"][-1] else out / "curve" / f"{step}.json"
        scores = evaluate(method, shards, out / "run" / "checkpoint.pt", config, written)
        evaluated = time.monotonic() - began - trained
        curve.append({"step": step, "train_s": round(trained, 1), "eval_s": round(evaluated, 1), **scores})
        with curve_path.open("a") as file:
            file.write(json.dumps(curve[-1]) + "\n")
        print(f"step {step}: {headline(scores, get_method(method).main_measures)}", flush=True)
    return curve


def evaluate(method: str, shards: Path, checkpoint: Path, config: dict, written: Path) -> dict:
    """``avmodels eval`` of the held-out split, as a user runs it; its JSON."""
    command = [sys.executable, "-m", "avmodels.cli", "eval", "--method", method, "--data", str(shards),
               "--checkpoint", str(checkpoint), "--split", config["split"], "--limit", str(config["limit"]),
               "--out", str(written), "--device", "cpu"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(written.read_text())


def table(method: str, config: dict, curve: list[dict], ready_s: float, total_s: float, prep: Path | None) -> str:
    """The method's section of learning.md: the curve of each main measure, then the final one beside its floor
    and ceiling, and whether it beats the floor."""
    main, final = get_method(method).main_measures, curve[-1]
    corpus = f"the extracted corpus {prep}" if prep else f"demo corpus {config['corpus'][0]} {config['corpus'][1]}"
    lines = [f"## {method}", "",
             f"{corpus}; shard {config['shard'] or 'as shipped'}; train {config['train']}, steps {config['steps']}; "
             f"held-out split `{config['split']}` (at most {config['limit']} samples). Corpus and shards "
             f"{ready_s / 60:.1f} min, all {total_s / 60:.1f} min on this machine.", "",
             "| step | train min | " + " | ".join(f"{name} (baseline)" for name in main) + " |",
             "|---|---|" + "---|" * len(main)]
    for point in curve:
        lines.append(f"| {point['step']} | {point['train_s'] / 60:.1f} | " + " | ".join(
            f"{point.get(name, float('nan')):.3f} ({point.get(f'{name}_baseline', float('nan')):.3f})"
            for name in main) + " |")
    lines += ["", "| measure | better | trained | baseline | real | beats the baseline |", "|---|---|---|---|---|---|"]
    shown = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for name, better in main.items():
        value, floor, real = final.get(name), final.get(f"{name}_baseline"), final.get(f"{name}_real")
        beats = value is not None and floor is not None and (value > floor if better == "higher" else value < floor)
        lines.append(f"| {name} | {better} | {shown(value)} | {shown(floor)} | {shown(real)} | "
                     f"{'yes' if beats else '**no**'} |")
    return "\n".join(lines) + "\n"


def merge(results: Path, method: str, section: str) -> None:
    """Replace the method's section of ``results`` (or add it), keeping the other methods' sections."""
    text = results.read_text() if results.is_file() else "# Does each method learn? (benchmarks/learning.py)\n\n"
    pattern = re.compile(rf"^## {method}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(text)


if __name__ == "__main__":
    main()
