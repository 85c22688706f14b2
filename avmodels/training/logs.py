"""What a run reports: a rich progress line, ``metrics.jsonl``, TensorBoard when installed, PNG sample grids."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from avmodels.pictures import write_png


class RunLog:
    """Averages over each ``every``-step window: losses, samples/s and the share of time spent waiting for data.

    Rows go to ``metrics.jsonl`` (one JSON object per window: step, stage, epoch, samples_per_s, data_wait,
    lr/<optimizer>, every loss term and, once the loader has skipped any, damaged_samples), and one for the last
    step of every stage and of a run stopped early (the window so far), so a stage shorter than ``every`` still
    leaves its losses. On resume, rows after the checkpoint's step are dropped first, so the file reads as one
    run.
    """

    def __init__(self, out: Path, every: int, resume_step: int | None, enabled: bool, console: Console | None = None):
        self.out, self.every, self.enabled = out, every, enabled
        self.window: dict[str, list[float]] = defaultdict(list)
        self.console = console or Console(stderr=True)
        self.path = out / "metrics.jsonl"
        self.progress = self.task = self.tensorboard = None
        self.last_row: dict = {}
        if not enabled:
            return
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= resume_step]
        self.path.write_text("".join(line + "\n" for line in kept))
        self.tensorboard = _tensorboard(out / "tensorboard")
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=self.console)
        self.progress.start()

    def begin_stage(self, name: str, total: int, done: int) -> None:
        if self.enabled:
            if self.task is not None:
                self.progress.update(self.task, visible=False)
            self.task = self.progress.add_task(name, total=total, completed=done, info="")

    def step(self, *, step: int, stage: str, epoch: int, samples: int, seconds: float, waited: float,
             losses: dict[str, float], lrs: dict[str, float], last: bool = False, damaged: int = 0) -> None:
        if not self.enabled:
            return
        for name, value in {**losses, "_samples": samples, "_seconds": seconds, "_waited": waited}.items():
            self.window[name].append(value)
        self.progress.advance(self.task)
        if step % self.every and not last:
            return
        seconds_total = sum(self.window.pop("_seconds"))
        row = {"step": step, "stage": stage, "epoch": epoch,
               "samples_per_s": round(sum(self.window.pop("_samples")) / seconds_total, 3),
               "data_wait": round(sum(self.window.pop("_waited")) / seconds_total, 4),
               **{f"lr/{name}": lr for name, lr in lrs.items()}, **({"damaged_samples": damaged} if damaged else {}),
               **{name: float(np.mean(values)) for name, values in self.window.items()}}
        self.window.clear()
        self.last_row = row
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.tensorboard is not None:
            for name, value in row.items():
                if isinstance(value, float):
                    self.tensorboard.add_scalar(name, value, step)
        losses_text = " ".join(f"{name} {value:.3g}" for name, value in row.items() if name in losses)
        self.progress.update(self.task, info=f"{row['samples_per_s']:.1f} samples/s, data wait "
                                             f"{row['data_wait']:.0%}  {losses_text}")

    def picture(self, image: np.ndarray, step: int) -> Path | None:
        if not self.enabled:
            return None
        path = self.out / "samples" / f"step-{step:07d}.png"
        write_png(image, path)
        if self.tensorboard is not None:
            self.tensorboard.add_image("samples", image, step, dataformats="HWC")
        return path

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(folder))

