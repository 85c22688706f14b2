"""avmodels: train, sample and evaluate the methods on shards written by `avprep shard`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from avprep.shard.recipe import RecipeError

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2)


@app.command()
def train(
    method: str = typer.Option(..., "--method", "-m", help="A method from `avmodels list`."),
    data: Path = typer.Option(..., "--data", "-d", help="Shard folder written by `avprep shard` (holds dataset.json)."),
    recipe: Optional[str] = typer.Option(None, help="Recipe name or TOML file; default: the method's shipped one."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder; default runs/<method>."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many steps in all (a checkpoint is written)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt exactly where it stopped."),
    stage: Optional[str] = typer.Option(None, help="Start at this stage (its init_from weights come from OUT)."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe value: --set train.batch_size=8 "
                                                     "--set model.image_size=64 --set train.stages.gan.steps=300"),
    device: Optional[str] = typer.Option(None, help="cpu or cuda; default cuda when there is one."),
):
    """Train a method on shards. Under `torchrun --nproc_per_node N` every process is one DDP rank.

    Writes OUT/checkpoint.pt (every train.checkpoint_every steps and at the end), OUT/metrics.jsonl,
    OUT/samples/step-*.png and OUT/summary.json; the console shows steps, losses, samples/s and data wait.
    """
    from avmodels.training.config import load_train_config
    from avmodels.training.trainer import train as run_training

    out = out or Path("runs") / method
    try:
        config = load_train_config(method, recipe, set_)
        _check_data(data)
        if resume and not (out / "checkpoint.pt").is_file():
            _fail(f"--resume: no checkpoint at {out / 'checkpoint.pt'}")
        summary = run_training(config, data, out, max_steps=max_steps, resume=resume, start_stage=stage,
                               device=device)
    except (RecipeError, KeyError, FileNotFoundError, ValueError) as error:
        _fail(str(error).strip("'\""))
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"trained {summary['steps']} steps -> {out}/checkpoint.pt; metrics {summary['metrics']}, "
                      f"sample grids {summary['samples']}/", highlight=False)


@app.command()
def sample(
    checkpoint: Path = typer.Option(Path("runs/wav2pix/checkpoint.pt"), "--checkpoint", "-c",
                                    help="A checkpoint.pt or stage-*.pt written by `avmodels train`."),
    audio: Path = typer.Option(..., "--audio", "-a", help="A WAV/FLAC/MP3 file or a video: its audio is used."),
    out: Path = typer.Option(Path("sample.png"), "--out", "-o", help="PNG to write: one face per second of audio."),
    every: float = typer.Option(1.0, help="Seconds between the starts of successive 1 s windows."),
    limit: int = typer.Option(16, help="At most this many faces."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda; default cuda when there is one."),
):
    """Wav2Pix: draw the face that speaks in AUDIO, one face per 1 s window, left to right."""
    import numpy as np
    import torch

    from avmodels.evaluation import load_trained
    from avmodels.pictures import grid, write_png
    from avprep.media.audio import SAMPLE_RATE, decode_audio
    from avprep.media.ffmpeg import MediaError
    from avprep.media.probe import audio_channels

    if not audio.is_file():
        _fail(f"{audio}: no such file")
    try:
        method, nets, _ = load_trained(checkpoint, _device(device))
        waveform = decode_audio(audio, channels=audio_channels(audio))
    except (FileNotFoundError, KeyError) as error:
        _fail(str(error))
    except MediaError as error:
        _fail(f"{audio}: {error.kind}: {error.message}")
    if not hasattr(method, "generate"):
        _fail(f"{method.name} has no audio-to-face sampling")
    hop = max(1, int(every * SAMPLE_RATE))
    starts = list(range(0, max(1, len(waveform) - SAMPLE_RATE + 1), hop))[:limit]
    if np.abs(waveform).max(initial=0) == 0:
        _fail(f"{audio}: the audio is silent")
    with torch.no_grad():
        faces = method.generate(nets, method.prepare_audio(waveform, starts).to(_device(device)))
    write_png(grid([faces], columns=len(faces)), out)
    console.print(f"{len(faces)} faces from {len(waveform) / SAMPLE_RATE:.1f} s of audio -> {out}", highlight=False)


@app.command("eval")
def evaluate(
    method: str = typer.Option(..., "--method", "-m", help="The method the checkpoint holds."),
    data: Path = typer.Option(..., "--data", "-d", help="Shard folder (dataset.json) to evaluate on."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Default runs/<method>/checkpoint.pt."),
    split: str = typer.Option("test", help="Which split of the shards."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON to write; default beside the checkpoint, "
                                                                 "eval-<split>.json (and eval-<split>.png)."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda; default cuda when there is one."),
):
    """Metrics of a trained method on a split, as a table and a JSON file, with a picture of real vs generated.

    Wav2Pix: face_detectability (share of generated faces in which MediaPipe's face mesh finds a face) and
    speaker_id_accuracy (a classifier trained on the real training crops names the speaker of each generated
    face), each beside its value on the real crops. Definitions: README, avmodels/metrics.py.
    """
    from avmodels.evaluation import load_trained
    from avmodels.pictures import grid, write_png

    checkpoint = checkpoint or Path("runs") / method / "checkpoint.pt"
    _check_data(data)
    splits = json.loads((data / "dataset.json").read_text())["splits"]
    if not splits.get(split, {}).get("samples"):
        filled = [name for name, facts in splits.items() if facts["samples"]]
        _fail(f"{data}: the {split!r} split holds no samples; splits with samples: {filled}")
    try:
        trained, nets, saved = load_trained(checkpoint, _device(device))
        if saved["method"] != method:
            _fail(f"{checkpoint} holds a {saved['method']} model, not {method}")
        metrics, rows = trained.evaluate(nets, data, split, _device(device))
    except (FileNotFoundError, KeyError, ValueError) as error:
        _fail(str(error).strip("'\""))
    metrics = {"method": method, "checkpoint": str(checkpoint), "step": saved.get("step"), **metrics}
    out = out or checkpoint.with_name(f"eval-{split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2) + "\n")
    write_png(grid(rows), out.with_suffix(".png"))
    table = Table("metric", "value")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"-> {out}, {out.with_suffix('.png')}", highlight=False)


@app.command()
def quickstart(
    out: Path = typer.Argument(Path("quickstart"), help="Folder for everything the chain writes."),
    steps: int = typer.Option(300, help="Training steps (Wav2Pix at 64 px, batch 16: a few minutes on a CPU)."),
    jobs: int = typer.Option(2, help="Parallel videos in extract."),
):
    """The whole chain on generated demo media: demo -> extract -> shard -> train Wav2Pix -> sample -> eval.

    Each step is the command a user would type (printed before it runs); re-running skips finished work.
    """
    import pyarrow.parquet as pq

    prep, shards, run = out / "prep", out / "shards", out / "run"
    steps_run = [
        ("avprep", "demo", str(out / "demo")),
        ("avprep", "extract", str(out / "demo"), "-o", str(prep), "-j", str(jobs)),
        ("avprep", "shard", str(prep), "-o", str(shards), "--recipe", "wav2pix"),
        ("avmodels", "train", "--method", "wav2pix", "--data", str(shards), "--out", str(run),
         "--max-steps", str(steps), "--set", "model.image_size=64", "--set", "train.batch_size=16",
         "--set", "train.num_workers=1", "--set", f"train.sample_every={max(1, steps // 3)}"),
    ]
    for command in steps_run:
        _run_step(command)
    test_video = next(row["video_id"] for row in pq.read_table(shards / "index.parquet").to_pylist()
                      if row["split"] == "test")
    clip = next(row["path"] for row in pq.read_table(prep / "manifest.parquet").to_pylist()
                if row["video_id"] == test_video)
    _run_step(("avmodels", "sample", "--checkpoint", str(run / "checkpoint.pt"), "--audio", str(clip),
               "--out", str(out / "sample.png")))
    _run_step(("avmodels", "eval", "--method", "wav2pix", "--data", str(shards), "--checkpoint",
               str(run / "checkpoint.pt"), "--out", str(out / "eval.json")))
    console.print(f"\n[bold green]done[/]: faces drawn from the audio of {clip}: {out / 'sample.png'}\n"
                  f"  training grids (real above generated): {run / 'samples'}/\n"
                  f"  metrics: {out / 'eval.json'} (real vs generated: {out / 'eval.png'})\n"
                  f"  checkpoint: {run / 'checkpoint.pt'}; losses per step: {run / 'metrics.jsonl'}", highlight=False)


@app.command("list")
def list_methods():
    """The methods, their stages and optimisers, and where their recipes are."""
    import importlib.resources

    from avmodels.methods import METHODS
    from avmodels.training.config import load_train_config

    table = Table("method", "stage", "length", "optimizers (networks, lr)", "recipe")
    for name in sorted(METHODS):
        config = load_train_config(name)
        path = importlib.resources.files("pipelines") / f"{name}.toml"
        for i, stage in enumerate(config.stages):
            length = f"{stage.steps} steps" if stage.steps is not None else f"{stage.epochs:g} epochs"
            optimizers = "; ".join(f"{o.name}: {'+'.join(o.networks)} {o.lr:g}" for o in stage.optimizers)
            table.add_row(name if i == 0 else "", stage.name, length, optimizers, str(path) if i == 0 else "")
    console.print(table)


def _run_step(command: tuple[str, ...]) -> None:
    """Run one of our own commands in a subprocess (an argument list, no shell), stopping the chain on failure."""
    import subprocess
    import sys

    console.print(f"[bold]$ {' '.join(command)}[/]", highlight=False)
    module = {"avprep": "avprep.cli", "avmodels": "avmodels.cli"}[command[0]]
    if subprocess.run([sys.executable, "-m", module, *command[1:]]).returncode != 0:
        _fail(f"`{' '.join(command)}` failed (its output is above)")


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _check_data(data: Path) -> None:
    if not (data / "dataset.json").is_file():
        _fail(f"{data}: no dataset.json here; make shards with `avprep shard PREP -o {data} --recipe METHOD`")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
