"""The ``avprep`` command line."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    help="Prepare audio-visual face datasets: extract every video once, then shard it for a method.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
console = Console(stderr=True)


@app.command()
def demo(
    out: Path = typer.Argument(..., help="Folder to write the demo corpus into (<speaker>/<clip>.mp4)."),
    speakers: int = typer.Option(4, min=1, help="Number of speakers (real faces from scikit-image and insightface)."),
    clips: int = typer.Option(3, min=1, help="Clips per speaker."),
    seconds: float = typer.Option(4.0, min=0.5, help="Length of each clip."),
    fps: float = typer.Option(25.0, min=1.0, help="Frame rate of the clips."),
    seed: int = typer.Option(0, help="Seed for speech and head motion."),
    words: int = typer.Option(0, min=0, max=16, help="Write an LRW-shaped tree instead (lipread_mp4/<WORD>/<split>/"
                                                    "<WORD>_NNNNN.mp4, for DAVS): this many words, each said by "
                                                    "every speaker; give --seconds 1.16 for LRW's 29 frames."),
):
    """Write a small corpus of talking-head videos made from real faces, to try the toolkit without data.

    Each clip animates a real photo with head motion and a mouth that follows generated speech, muxed as H.264/AAC
    MP4, with its ground truth (mouth opening, head transform) in <clip>.truth.json.
    """
    from avprep.synth.catalogue import make_demo_corpus, make_lrw_demo

    count = words * speakers if words else speakers * clips
    with console.status(f"writing {count} clips into {out}"):
        if words:
            paths = make_lrw_demo(out, words=words, speakers=speakers, seconds=seconds, fps=fps, seed=seed)
        else:
            paths = make_demo_corpus(out, speakers=speakers, clips_per_speaker=clips, seconds=seconds, fps=fps,
                                     seed=seed)
    console.print(f"[green]{len(paths)} clips[/] in {out}; next: [bold]avprep extract {out} -o prep/[/]")


@app.command()
def extract(
    inputs: List[Path] = typer.Argument(..., help="Video files, folders (searched recursively for .mp4 .mkv .avi "
                                                   ".mov .webm .mpg .mpeg .m4v .ts .mts .flv .3gp .wmv) or text "
                                                   "files (.txt .lst .csv, or any text) listing one path per line.",
                                        readable=False),
    out: Path = typer.Option(..., "--out", "-o", help="Prep folder: videos/<video_id>/ and manifest.parquet."),
    fps: Optional[float] = typer.Option(None, min=1.0, help="Resample every video to this constant rate "
                                                            "(default: each video's own rate)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Videos processed in parallel (worker processes; one "
                                                             "that crashes or hangs fails only its video)."),
    backend: str = typer.Option("loky", help="'loky' (worker processes on this machine) or 'dask' (a Dask "
                                             "cluster, see --scheduler)."),
    scheduler: Optional[str] = typer.Option(None, help="Dask scheduler address, e.g. tcp://10.0.0.5:8786."),
    meta: Optional[Path] = typer.Option(None, help="CSV keyed by a 'video_id' or 'path' column: 'speaker', "
                                                   "'label' and 'split' override the layout's; any other column "
                                                   "(gender, age, ...) is an attribute carried to the manifest and "
                                                   "the shards (empty cells: missing)."),
    layout: str = typer.Option("auto", help="Dataset layout of the input folders: lrw, grid, voxceleb, hdtf, flat, "
                                            "folders (first folder = speaker), or auto (recognised from the "
                                            "tree, else folders). See docs/datasets.md."),
    force: bool = typer.Option(False, help="Redo videos already extracted with the same settings."),
    retry_failed: bool = typer.Option(False, help="Redo videos that failed before (they are skipped by default)."),
    fail_on_error: bool = typer.Option(False, help="Exit with code 1 if any video failed."),
    max_duration: float = typer.Option(4 * 3600.0, help="Videos longer than this many seconds fail as 'too long'."),
    min_duration: float = typer.Option(0.24, min=0.0, help="Videos shorter than this many seconds fail as 'too "
                                                           "short' (default: the shortest window a shipped recipe "
                                                           "cuts, HeadGAN's 6 frames at 25 fps)."),
    video_timeout: Optional[float] = typer.Option(None, min=1.0, help="Seconds one video may take before it fails "
                                                  "as 'timeout' and its worker is replaced (default: 10 x the "
                                                  "video's duration + 60 s)."),
    silence_dbfs: float = typer.Option(-60.0, help="Audio quieter than this RMS level fails as 'silent audio'."),
    chunk_mb: int = typer.Option(64, min=1, help="Decoded frames held in memory at once per video, in MiB."),
    no_face: bool = typer.Option(False, "--no-face", help="Skip face analysis: audio and frame timing only."),
    canonical_size: int = typer.Option(256, min=64, help="Side of the stored aligned face crop, in pixels. "
                                                         "Use 320+ to give HeadGAN-size recipes full resolution."),
    jpeg_quality: int = typer.Option(95, min=50, max=100, help="JPEG quality of the stored crops."),
    insightface_root: Optional[Path] = typer.Option(None, help="Folder of a local insightface model pack (e.g. "
                                                               "buffalo_l): detect faces with its SCRFD model "
                                                               "instead of MediaPipe's bundled detector."),
    fix_offset: bool = typer.Option(False, help="Shift the stored audio by the estimated A/V offset when the "
                                                "estimate is confident (>= 0.3, see docs/extract.md)."),
    asr_model: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="ONNX acoustic model giving "
                                             "per-frame character posteriors (HeadGAN's audio input); contract in "
                                             "avprep/features/asr.py."),
    asr: Optional[str] = typer.Option(None, help="Built-in speech recogniser for HeadGAN's character features of "
                                                 "videos without a timed transcript: 'pocketsphinx' (English, its "
                                                 "model ships in the wheel)."),
    no_audio_features: bool = typer.Option(False, "--no-audio-features", help="Skip MFCC and HeadGAN audio "
                                                                              "features."),
    morphable_basis: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="3D morphable model "
                                                   "basis (.npz, see 'avprep morphable build'); default: the "
                                                   "basis shipped with avprep."),
    no_morphable: bool = typer.Option(False, "--no-morphable", help="Skip the 3D morphable model fit."),
):
    """Analyse each video once into OUT/videos/<video_id>/ and OUT/manifest.parquet.

    A bad video is recorded as failed with a one-line reason and never stops the run. Re-running skips videos
    already done with the same settings, so a killed run resumes where it stopped.
    """
    from avprep.pipeline.config import ExtractConfig, FaceConfig
    from avprep.pipeline.faults import EnvironmentFault, FolderBusy
    from avprep.pipeline.inputs import InputError, discover
    from avprep.pipeline.runner import RunOptions

    if backend not in ("loky", "dask"):
        raise typer.BadParameter("use 'loky' or 'dask'", param_hint="--backend")
    if asr not in (None, "pocketsphinx"):
        raise typer.BadParameter("the built-in recogniser is 'pocketsphinx' (or give an ONNX model with "
                                 "--asr-model)", param_hint="--asr")
    if backend == "dask" and not scheduler:
        raise typer.BadParameter("--backend dask needs --scheduler ADDRESS", param_hint="--scheduler")
    try:
        sources = discover(inputs, meta, layout)
    except InputError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    if not sources:
        console.print(f"[red]error:[/] no videos found in {', '.join(map(str, inputs))}")
        raise typer.Exit(2)
    face = None
    if not no_face:
        if insightface_root:
            from avprep.face.detect import find_scrfd_model

            try:
                find_scrfd_model(insightface_root)
            except FileNotFoundError as error:
                raise typer.BadParameter(str(error), param_hint="--insightface-root") from None
        face = FaceConfig(canonical_size=canonical_size, jpeg_quality=jpeg_quality, fix_offset=fix_offset,
                          insightface_root=str(insightface_root.resolve()) if insightface_root else None)
    config = ExtractConfig(fps=fps, max_duration_s=max_duration, min_duration_s=min_duration,
                           silence_dbfs=silence_dbfs, face=face,
                           audio_features=not no_audio_features, morphable=not no_morphable,
                           morphable_basis=str(morphable_basis.resolve()) if morphable_basis else None,
                           asr_model=str(asr_model.resolve()) if asr_model else None, asr=asr)
    if config.audio_features and not asr_model and not asr:
        console.print("note: no --asr or --asr-model, so no ASR character features; recipes that need them "
                      "(HeadGAN) will use <clip>.transcript.json where present or refuse to shard")
    options = RunOptions(jobs=jobs, backend=backend, scheduler=scheduler, force=force, retry_failed=retry_failed,
                         max_chunk_bytes=chunk_mb << 20, video_timeout_s=video_timeout)
    try:
        summary = _run_with_progress(sources, out, config, options)
    except (EnvironmentFault, FolderBusy) as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(1) from None
    _print_summary(summary)
    if fail_on_error and summary.failed:
        raise typer.Exit(1)


def _run_with_progress(sources, out, config, options):
    from avprep.pipeline.runner import run_extract

    counts = {"ok": 0, "failed": 0, "frames": 0}
    progress = Progress(TextColumn("[bold]extract"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/]"),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console)
    with progress:
        task = progress.add_task("extract", total=len(sources), ok=0, failed=0, rate="")
        started = progress.get_time()

        def on_result(record: dict, skipped: bool) -> None:
            counts["ok" if record["status"] == "ok" else "failed"] += 1
            if not skipped:
                counts["frames"] += record.get("n_frames") or 0
            elapsed = max(progress.get_time() - started, 1e-6)
            progress.update(task, advance=1, ok=counts["ok"], failed=counts["failed"],
                            rate=f"{counts['frames'] / elapsed:.0f} frames/s")
            if record["status"] != "ok" and not skipped:
                progress.console.print(f"[red]failed[/] {record['video_id']}: "
                                       f"{record['error_kind']}: {record['error']}")

        return run_extract(sources, out, config, options, on_result=on_result)


def _print_summary(summary) -> None:
    table = Table(title="extract summary", show_header=False)
    table.add_row("ok", str(summary.ok))
    table.add_row("failed", str(summary.failed))
    for kind, count in summary.failures.most_common():
        table.add_row(f"  {kind}", str(count))
    table.add_row("skipped (already done)", str(summary.skipped))
    hours = summary.video_seconds / 3600
    table.add_row("video processed", f"{hours:.3f} h ({summary.frames} frames)")
    elapsed = max(summary.elapsed_s, 1e-6)
    table.add_row("throughput",
                  f"{summary.frames / elapsed:.0f} frames/s, {summary.video_seconds / elapsed:.1f}× real time")
    table.add_row("manifest", str(summary.manifest))
    console.print(table)


@app.command()
def manifest(prep: Path = typer.Argument(..., help="Prep folder written by 'avprep extract'.")):
    """Rebuild PREP/manifest.parquet from the per-video records (e.g. after a killed run) and count it."""
    from avprep.pipeline.store import PrepDir

    prep_dir = PrepDir(prep)
    records = prep_dir.records()
    path = prep_dir.write_manifest(records)
    ok = sum(record["status"] == "ok" for record in records)
    console.print(f"{path}: {len(records)} videos, {ok} ok, {len(records) - ok} failed")


@app.command()
def inspect(
    prep: Path = typer.Argument(..., help="Prep folder written by 'avprep extract'."),
    video: str = typer.Option(..., "--video", help="video_id to show (see the manifest)."),
    out: Path = typer.Option(Path("sheet.png"), "--out", "-o", help="PNG to write."),
    frames: int = typer.Option(8, min=1, max=32, help="Frames to show, spread over the video."),
):
    """Draw a contact sheet of what extract saw in one video: frames with the face box and 68 landmarks above the
    aligned crops."""
    import cv2

    from avprep.inspect import contact_sheet

    try:
        sheet = contact_sheet(prep, video, frames)
    except (FileNotFoundError, ValueError) as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    console.print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]})")


@app.command()
def shard(
    prep: Path = typer.Argument(..., help="Prep folder written by 'avprep extract'."),
    out: Path = typer.Option(..., "--out", "-o", help="Shard folder: <split>-NNNNNN.tar, index.parquet, "
                                                      "dataset.json."),
    recipe: str = typer.Option(..., help="A shipped recipe (wav2pix, atvgnet, davs, headgan, ear_sr) or a .toml."),
    max_count: int = typer.Option(1000, min=1, help="Samples per shard at most."),
    max_size: Optional[str] = typer.Option(None, help="Bytes per shard at most, e.g. 1GB or 500MB."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Shards written in parallel (loky processes)."),
    backend: str = typer.Option("loky", help="'loky' (this machine) or 'dask' (see --scheduler)."),
    scheduler: Optional[str] = typer.Option(None, help="Dask scheduler address for --backend dask."),
    force: bool = typer.Option(False, help="Replace shards of another plan already in OUT."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe value: --set split.by=dataset (LRW's own "
                                                     "splits) --set data.window=centre --set data.stride_s=0.5"),
):
    """Cut a recipe's clip windows from PREP into WebDataset tar shards, split by speaker (or video) from a seed.
    Re-running skips complete shards; the same inputs give byte-identical tars."""
    from avprep.pipeline.faults import EnvironmentFault, FolderBusy
    from avprep.shard.recipe import RecipeError, load_recipe
    from avprep.shard.run import run_shard

    try:
        chosen = load_recipe(recipe, set_)
        with console.status(f"sharding {prep} with recipe {chosen.name}"):
            summary = run_shard(prep, out, chosen, max_count=max_count, max_size=_bytes(max_size), jobs=jobs,
                                backend=backend, scheduler=scheduler, force=force)
    except (RecipeError, EnvironmentFault, FolderBusy) as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(1) from None
    table = Table(title=f"shards of {chosen.name} in {out}", show_header=False)
    for split, count in summary.samples.items():
        table.add_row(f"{split} samples", str(count))
    table.add_row("shards written / already complete", f"{summary.shards_written} / {summary.shards_skipped}")
    table.add_row("bytes written", f"{summary.bytes_written / 2**20:.1f} MiB")
    if summary.resampled:
        table.add_row("videos taken at the recipe's rate", f"{summary.resampled} ({chosen.fps:g} fps, the frames "
                                                           "nearest each frame time)")
    if summary.left_out:
        table.add_row("tracks left out", f"{len(summary.left_out)} (dataset.json \"left_out\" says why)")
    console.print(table)


def _bytes(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    number = text.strip().upper().rstrip("S")
    digits = number.rstrip("KMGIB")
    if not digits or number[len(digits):] not in units:
        raise typer.BadParameter(f"{text!r}: use a byte count like 500MB or 1GB", param_hint="--max-size")
    return int(float(digits) * units[number[len(digits):]])


@app.command()
def validate(shards: Path = typer.Argument(..., help="Shard folder written by 'avprep shard'.")):
    """Read every shard end to end: readable, sample counts as in index.parquet, every field present with the dtype
    and shape of dataset.json. Exits 1 on any problem."""
    from avprep.shard.validate import validate_shards

    counts, problems = validate_shards(shards)
    for problem in problems[:50]:
        console.print(f"[red]problem:[/] {problem}")
    if len(problems) > 50:
        console.print(f"... and {len(problems) - 50} more")
    console.print(f"{len(counts)} shards, {sum(counts.values())} samples, {len(problems)} problems")
    if problems:
        raise typer.Exit(1)


@app.command()
def report(
    source: Path = typer.Argument(..., help="A prep folder (avprep extract) or a shard folder (avprep shard)."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML page to write."),
    sheets: int = typer.Option(4, min=0, help="Contact sheets of videos to include (prep folders)."),
):
    """Write one self-contained HTML page (plots and pictures inline, nothing fetched) to judge a dataset at a
    glance: failures, face size, pose, blur, durations, A/V offsets, speakers, contact sheets or sample grids."""
    from avprep.report import write_report

    try:
        with console.status(f"writing a report on {source}"):
            path = write_report(source, out, max_sheets=sheets)
    except FileNotFoundError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    console.print(f"wrote {path}")


morphable_app = typer.Typer(help="The 3D morphable face model fitted during extract.", no_args_is_help=True)
app.add_typer(morphable_app, name="morphable")


@morphable_app.command("build")
def morphable_build(
    prep: Path = typer.Argument(..., help="Prep folder written by 'avprep extract' (real videos: the more people "
                                          "and expressions, the better)."),
    out: Path = typer.Option(..., "--out", "-o", help="Basis file to write (.npz)."),
    identity: int = typer.Option(6, min=1, help="Identity components (at most one fewer than the face tracks)."),
    expression: int = typer.Option(10, min=1, help="Expression components."),
):
    """Learn a morphable model from extracted meshes: Procrustes-aligned, identity from per-track means, expression
    from within-track variation (PCA). Use it with 'avprep extract --morphable-basis'."""
    from avprep.morphable import build_and_save

    try:
        with console.status(f"building a morphable model from {prep}"):
            model = build_and_save(prep, out, identity, expression)
    except (ValueError, FileNotFoundError) as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    console.print(f"wrote {out}: {model.identity.shape[0]} identity and {model.expression.shape[0]} expression "
                  f"components on {model.mean.shape[0]} vertices")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
