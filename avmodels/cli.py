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
_stderr = Console(stderr=True)  # spinners and bars, beside the results on stdout


def _one_line(error: Exception) -> str:
    """A data or recipe error as one line: a DataLoader worker's error arrives wrapped in its traceback, whose
    last line is the error itself."""
    text = str(error).strip("'\"")
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if f"{type(error).__name__}: " in last else last
    return text


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2)


@app.command()
def train(
    method: str = typer.Option(..., "--method", "-m", help="A method from `avmodels list`."),
    data: str = typer.Option(..., "--data", "-d", help="Shard folder written by `avprep shard` (holds dataset.json): "
                                                       "a path, or a URL (https://, s3://, gs://, hf://)."),
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
        _shards(data)
        if resume and not (out / "checkpoint.pt").is_file():
            _fail(f"--resume: no checkpoint at {out / 'checkpoint.pt'}")
        summary = run_training(config, data, out, max_steps=max_steps, resume=resume, start_stage=stage,
                               device=device)
    except (RecipeError, KeyError, FileNotFoundError, ValueError) as error:
        _fail(f"{_one_line(error)} (run folder: {out})")
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"trained {summary['steps']} steps -> {out}/checkpoint.pt; metrics {summary['metrics']}, "
                      f"sample grids {summary['samples']}/", highlight=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sample(
    context: typer.Context,
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c",
                                    help="A checkpoint.pt or stage-*.pt written by `avmodels train`."),
    audio: Optional[Path] = typer.Option(None, "--audio", "-a", help="Speech: a WAV/FLAC/MP3 file or a video (its "
                                                                     "audio)."),
    reference: Optional[Path] = typer.Option(None, help="A photo (or a video's first frame) of the face to animate; "
                                                        "it is found, aligned and cropped as in training."),
    driving: Optional[Path] = typer.Option(None, help="A video whose face motion drives the output (its voice is "
                                                      "the output's sound unless --audio is given)."),
    lr: Optional[Path] = typer.Option(None, help="A low-resolution face: an image at the recipe's LR size is taken "
                                                 "as is; a larger face photo is cropped and downsampled as in "
                                                 "training."),
    out: Path = typer.Option(Path("sample.png"), "--out", "-o", help="out.png (a grid of faces) or out.mp4 (a video "
                                                                     "with the input sound)."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda; default cuda when there is one."),
):
    """Sample a trained method: each method says which inputs it takes and writes a PNG or an MP4 with sound
    (`avmodels list`). A method's own options follow as --NAME VALUE (`avmodels list` shows them), e.g. Wav2Pix's
    `--audio speech.wav -o faces.png --every 0.5` (a face per half second) or `-o talking.mp4` (a face for every
    frame, from the second of speech around it)."""
    import torch

    from avmodels import checkpoints
    from avmodels.methods import load_trained
    from avmodels.pictures import grid, write_png
    from avmodels.sampling import InputProblem, prepare_inputs, scratch_folder, write_talking_video
    from avprep.media.ffmpeg import MediaError
    from avprep.shard.recipe import parse_recipe

    output = {".png": "image", ".mp4": "video"}.get(out.suffix.lower())
    if output is None:
        _fail(f"-o {out}: write a .png (images) or an .mp4 (video with sound)")
    try:
        method, nets, saved = load_trained(checkpoint, _device(device))
    except (FileNotFoundError, KeyError) as error:
        _fail(str(error))
    if output not in method.outputs:
        _fail(f"{method.name} makes {' and '.join(method.outputs)} outputs: use -o "
              f"{' or -o '.join('out.png' if o == 'image' else 'out.mp4' for o in method.outputs)}")
    options = _method_options(method, context.args)
    recipe = parse_recipe(saved["method"], checkpoints.recipe_of(saved))
    fps = checkpoints.frame_rate(saved)
    given = {"audio": audio, "reference": reference, "driving": driving, "lr": lr}
    try:
        with scratch_folder() as scratch:
            with _stderr.status(f"preparing the inputs{' (analysing --driving)' if driving else ''}"):
                inputs = prepare_inputs(method, recipe, fps, given, Path(scratch))
            with torch.no_grad():
                images = method.sample(nets, inputs, output, _device(device), **options)
    except InputProblem as error:
        _fail(str(error))
    except MediaError as error:
        _fail(f"{error.kind}: {error.message}")
    if output == "image":
        write_png(grid([images], columns=len(images)), out)
        console.print(f"{len(images)} faces -> {out}", highlight=False)
    else:
        write_talking_video(out, images, inputs.audio, fps)
        console.print(f"{len(images)} frames at {fps:g} fps with {len(inputs.audio) / 16000:.2f} s of sound -> {out}",
                      highlight=False)


def _method_options(method, args: list[str]) -> dict:
    """``--name value`` pairs of the method's ``sample_options``, each read as its default's type."""
    declared, options = method.sample_options, {}
    if len(args) % 2:
        _fail(f"{args[-1]}: give the option a value")
    for flag, text in zip(args[::2], args[1::2]):
        name = flag.removeprefix("--").replace("-", "_")
        if not flag.startswith("--") or name not in declared:
            known = ", ".join(f"--{n}" for n in declared) or "none"
            _fail(f"{flag}: not an option of `avmodels sample` or of {method.name} (its own: {known})")
        kind = type(declared[name][0])
        try:
            options[name] = kind(text)
        except ValueError:
            _fail(f"{flag} {text}: expected a {kind.__name__}")
    return options


@app.command("eval")
def evaluate(
    method: str = typer.Option(..., "--method", "-m", help="The method the checkpoint holds."),
    data: str = typer.Option(..., "--data", "-d", help="Shard folder (dataset.json) to evaluate on: a path or a URL."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Default runs/<method>/checkpoint.pt."),
    split: str = typer.Option("test", help="Which split of the shards (any name the recipe's split made)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate at most this many samples of the split."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON to write; default beside the checkpoint, "
                                                                 "eval-<split>.json (and eval-<split>.png)."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda; default cuda when there is one."),
):
    """The paper's measures of a trained method on a split, each beside its value on the real data (the ceiling)
    and on a trivial baseline (the floor), as a table, a JSON file and a picture of real vs generated faces; video
    methods also write side-by-side MP4s (real | generated) with sound into eval-<split>/. The split is streamed.
    Every measure, its paper and protocol: docs/evaluation.md and avmodels/metrics/.
    """
    from avmodels import checkpoints
    from avmodels.methods import load_trained
    from avmodels.pictures import grid, write_png
    from avmodels.sampling import side_by_side, write_talking_video

    checkpoint = checkpoint or Path("runs") / method / "checkpoint.pt"
    splits = _shards(data).splits
    if not splits.get(split, {}).get("samples"):
        filled = [name for name, facts in splits.items() if facts["samples"]]
        _fail(f"{data}: the {split!r} split holds no samples; splits with samples: {filled}")
    try:
        trained, nets, saved = load_trained(checkpoint, _device(device))
        if saved["method"] != method:
            _fail(f"{checkpoint} holds a {saved['method']} model, not {method}")
        result = trained.evaluate(nets, data, split, _device(device), limit=limit)
    except (FileNotFoundError, KeyError, ValueError) as error:
        _fail(str(error).strip("'\""))
    metrics = {"method": method, "checkpoint": str(checkpoint), "step": saved.get("step"), **result.metrics}
    out = out or checkpoint.with_name(f"eval-{split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2) + "\n")
    write_png(grid(result.rows), out.with_suffix(".png"))
    for name, real, fake, sound in result.videos:
        write_talking_video(out.with_suffix("") / f"{name}.mp4", side_by_side(real, fake), sound,
                            checkpoints.frame_rate(saved))
    console.print(_measures_table(metrics, trained.main_measures))
    console.print(f"-> {out}, {out.with_suffix('.png')}", highlight=False)


def _measures_table(metrics: dict, main: dict) -> Table:
    """One row per measure: generated, the trivial baseline, the real data; the main measures in bold with which
    way is better. Descriptions ("protocols", "baselines") stay in the JSON."""
    shown = lambda value: f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)
    table = Table("measure", "generated", "baseline", "real")
    for name, value in metrics.items():
        beside = name.endswith(("_baseline", "_real")) and name.rsplit("_", 1)[0] in metrics
        if isinstance(value, dict) or beside:
            continue
        label = f"[bold]{name}[/] ({main[name]} is better)" if name in main else name
        table.add_row(label, shown(value), shown(metrics.get(f"{name}_baseline")), shown(metrics.get(f"{name}_real")))
    return table


@app.command()
def quickstart(
    out: Path = typer.Argument(Path("quickstart"), help="Folder for everything the chain writes."),
    method: str = typer.Option(..., "--method", "-m", help="A method from `avmodels list`."),
    steps: Optional[int] = typer.Option(None, help="Training steps (per stage for methods with several; default: "
                                                   "the recipe's [quickstart] steps): small models, minutes on a "
                                                   "CPU."),
    jobs: int = typer.Option(2, help="Parallel videos in extract."),
):
    """The whole chain on generated demo media: demo -> extract -> shard -> train -> sample -> eval, as the
    method's recipe says in its [quickstart] table.

    Each step is the command a user would type (printed before it runs); re-running skips finished work.
    """
    import pyarrow.parquet as pq

    from avmodels.evaluation import headline
    from avmodels.methods import get_method
    from avprep.shard.recipe import RecipeError, read_recipe

    try:
        table = read_recipe(method)[1].get("quickstart")
    except RecipeError as error:
        _fail(f"--method {method}: {error}")
    if table is None:
        _fail(f"--method {method}: its recipe has no [quickstart] table")
    steps = steps or table["steps"]
    prep, shards, run = out / "prep", out / "shards", out / "run"
    for command in (
        ("avprep", "demo", str(out / "demo"), *table.get("demo", ())),
        ("avprep", "extract", str(out / "demo"), "-o", str(prep), "-j", str(jobs), *table.get("extract", ())),
        ("avprep", "shard", str(prep), "-o", str(shards), "--recipe", method, *table.get("shard", ())),
    ):
        _run_step(command)
    test_videos = list(dict.fromkeys(row["video_id"] for row in pq.read_table(shards / "index.parquet").to_pylist()
                                     if row["split"] == "test"))
    manifest = {row["video_id"]: row for row in pq.read_table(prep / "manifest.parquet").to_pylist()}
    clip, speaker = manifest[test_videos[0]]["path"], manifest[test_videos[0]]["speaker"]
    driving = next((manifest[v]["path"] for v in test_videos[1:] if manifest[v]["speaker"] != speaker),
                   manifest[test_videos[-1]]["path"])  # a test video of another speaker where there is one
    fill = lambda items: [item.format(steps=steps, clip=clip, driving=driving, out=out) for item in items]
    _run_step(("avmodels", "train", "--method", method, "--data", str(shards), "--out", str(run),
               "--set", "train.num_workers=1", "--set", f"train.sample_every={max(1, steps // table['pictures'])}",
               *fill(table.get("train", ()))))
    checkpoint = ("--checkpoint", str(run / "checkpoint.pt"))
    for options in table.get("sample", ()):
        _run_step(("avmodels", "sample", *checkpoint, *fill(options)))
    evaluations = table.get("evaluate", [["test", "eval.json"]])
    for split, written in evaluations:
        _run_step(("avmodels", "eval", "--method", method, "--data", str(shards), *checkpoint, "--limit", "16",
                   "--split", split, "--out", str(out / written)))
    main = get_method(method).main_measures
    for split, written in evaluations:
        console.print(f"{split}: {headline(json.loads((out / written).read_text()), main)}", highlight=False)
    metrics = ", ".join(f"{out / written} ({split})" for split, written in evaluations)
    videos = f"; videos: {out / 'eval'}/" if (out / "eval").is_dir() else ""
    console.print(f"\n[bold green]done[/]: {fill([table['says']])[0]}\n"
                  f"  training grids (real above generated): {run / 'samples'}/\n"
                  f"  metrics: {metrics} (real vs generated: {out / 'eval.png'}{videos})\n"
                  f"  checkpoint: {run / 'checkpoint.pt'}; losses per step: {run / 'metrics.jsonl'}", highlight=False)


# what `avmodels list --params` sizes the label-dependent heads for: 10 speakers, LRW's 500 words
LISTED_DATASET = {"speakers": [f"speaker{i}" for i in range(10)], "labels": [f"word{i}" for i in range(500)]}


@app.command("list")
def list_methods(
    params: bool = typer.Option(False, "--params", help="Each network's parameter count at the default recipe."),
    as_json: bool = typer.Option(False, "--json", help="With --params: print {method: {network: count}} as JSON."),
):
    """The methods, what they sample from and to, their stages and optimisers, and where their recipes are."""
    from avmodels.methods import METHODS, get_method
    from avmodels.training.config import load_train_config
    from avprep.shard.recipe import shipped_recipe

    if params:
        import torch

        counts = {}
        for name in sorted(METHODS):
            with torch.device("meta"):  # counted without allocating
                method = get_method(name)(load_train_config(name).model, LISTED_DATASET)
            counts[name] = {net: sum(p.numel() for p in module.parameters()) for net, module in method.networks.items()}
        if as_json:
            print(json.dumps(counts, indent=1))
        else:
            table = Table("method", "network", "parameters (10 speakers, 500 words)")
            for name, networks in counts.items():
                for i, (net, count) in enumerate(networks.items()):
                    table.add_row(name if i == 0 else "", net, f"{count:,}")
            console.print(table)
        return

    table = Table("method", "sample from -> to", "stage", "length", "optimizers (networks, lr)", "recipe")
    for name in sorted(METHODS):
        config, method = load_train_config(name), get_method(name)
        drivers = " or ".join("--" + d for d in method.drivers)
        given = ", ".join("--" + i for i in method.inputs) + (f" + {drivers}" if drivers else "")
        own = "".join(f" [--{option} {default}]" for option, (default, _) in method.sample_options.items())
        sampling = f"{given}{own} -> {' or '.join(method.outputs)}"
        for i, stage in enumerate(config.stages):
            length = f"{stage.steps} steps" if stage.steps is not None else f"{stage.epochs:g} epochs"
            optimizers = "; ".join(f"{o.name}: {'+'.join(o.networks)} {o.lr:g}"
                                   + "".join(f" ({net} x{scale:g})" for net, scale in o.lr_scale.items())
                                   for o in stage.optimizers)
            table.add_row(name if i == 0 else "", sampling if i == 0 else "", stage.name, length, optimizers,
                          str(shipped_recipe(name)) if i == 0 else "")
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


def _shards(data: str):
    """The shard folder ``data`` (a path or a URL), or a one-line error saying how to make one or, for a URL whose
    scheme needs an fsspec plugin that is missing, which to install."""
    from avprep.shard.folder import ShardDir

    try:
        return ShardDir(data)
    except (FileNotFoundError, ImportError, ValueError, OSError) as error:
        _fail(f"{data}: {error}" if isinstance(error, ImportError) else str(error))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
