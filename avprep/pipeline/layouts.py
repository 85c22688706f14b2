"""How datasets lie on disk: which part of a path is the speaker, the label and the dataset's own split, and
where the side files with timed words are.

    lrw        lipread_mp4/<WORD>/{train,val,test}/<WORD>_00001.mp4 (+ .txt: the word and its duration).
               The first folder is the word, not a speaker: LRW publishes no speaker ids, so there are none.
    grid       s<N>/.../<code>.mpg, the sentence code as label; word timings from <code>.align beside the video,
               in an align/ folder next to it or under the root (align/, alignments/, optionally per speaker).
    voxceleb   <id>/<youtube id>/<clip>.mp4 (VoxCeleb1 and 2): the id is the speaker.
    hdtf       <Source>_<Name>_<NNN>.mp4 (WDA_BarackObama_000.mp4): the name without its clip number.
    flat       no speakers.
    folders    the first folder is the speaker (what ``auto`` falls back to).
    auto       the first of lrw, grid, voxceleb, hdtf whose pattern every video under a root matches; else folders.

Any layout also takes ``<clip>.transcript.json`` beside a video as its timed words.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path, PurePath

LAYOUTS = ("auto", "lrw", "grid", "voxceleb", "hdtf", "flat", "folders")

_LRW = re.compile(r"(?:^|/)([A-Z0-9']+)/(train|val|test)/\1_\d+\.[^/]+$")
_GRID_SPEAKER = re.compile(r"^s\d+$")
_VOXCELEB = re.compile(r"^id\d+/[^/]+/[^/]+$")
_HDTF = re.compile(r"^([A-Za-z]+_.+)_\d+\.[^/]+$")


@dataclasses.dataclass(frozen=True)
class PathFacts:
    """What a video's place in its dataset says about it."""

    speaker: str | None
    label: str | None = None  # LRW: the word; GRID: the sentence code
    dataset_split: str | None = None  # LRW: train / val / test from the folder
    transcript: str | None = None  # side file with timed words: .transcript.json, GRID .align or LRW .txt


def detect_layout(relative_paths: list[str]) -> str:
    """The dataset layout every one of ``relative_paths`` (POSIX, relative to one root) fits; ``folders`` if none."""
    if not relative_paths:
        return "folders"
    if all(_LRW.search(p) for p in relative_paths):
        return "lrw"
    if all(Path(p).suffix.lower() == ".mpg" and _grid_speaker(p) for p in relative_paths):
        return "grid"
    if all(_VOXCELEB.match(p) for p in relative_paths):
        return "voxceleb"
    if all("/" not in p and _HDTF.match(p) for p in relative_paths):
        return "hdtf"
    return "folders"


def path_facts(layout: str, root: Path, path: Path) -> PathFacts:
    """Speaker, label, dataset split and transcript of the video at ``path`` under ``root`` in ``layout``."""
    relative = PurePath(path.relative_to(root)).as_posix() if _is_under(path, root) else path.name
    parts = relative.split("/")
    beside = path.with_suffix(".transcript.json")
    transcript = str(beside) if beside.is_file() else None
    if layout == "lrw":
        match = _LRW.search(relative)
        if not match:
            raise ValueError(f"{relative}: not an LRW path (<WORD>/<train|val|test>/<WORD>_NNNNN.mp4)")
        words = path.with_suffix(".txt")
        return PathFacts(None, match.group(1), match.group(2), transcript or (str(words) if words.is_file() else None))
    if layout == "grid":
        speaker = _grid_speaker(relative)
        return PathFacts(speaker, path.stem, None, transcript or _grid_align(root, path, speaker))
    if layout == "hdtf":
        match = _HDTF.match(path.name)
        return PathFacts(match.group(1) if match else path.stem, None, None, transcript)
    if layout == "flat":
        return PathFacts(None, None, None, transcript)
    if layout in ("voxceleb", "folders"):
        return PathFacts(parts[0] if len(parts) > 1 else None, None, None, transcript)
    raise ValueError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")


def _grid_speaker(relative: str) -> str | None:
    return next((part for part in relative.split("/")[:-1] if _GRID_SPEAKER.match(part)), None)


def _grid_align(root: Path, path: Path, speaker: str | None) -> str | None:
    name = path.with_suffix(".align").name
    places = [path.parent, path.parent / "align", path.parent.parent / "align"]
    for base in ("align", "alignments"):
        places += [root / base / speaker, root / base] if speaker else [root / base]
    found = next((place / name for place in places if (place / name).is_file()), None)
    return str(found) if found else None


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def read_timed_words(path: str, video_s: float) -> list[tuple[float, float, str]]:
    """(start s, end s, word) from a side file: ``.transcript.json`` ([{"start", "end", "text"}]), a GRID
    ``.align`` ("start end word" in 1/25000 s; silences ``sil`` and ``sp`` left out), or an LRW ``.txt`` (the word
    and its duration; LRW centres the word in its clip of ``video_s`` seconds)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    suffix = Path(path).suffix.lower()
    if suffix == ".align":
        words = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[2] not in ("sil", "sp"):
                words.append((int(fields[0]) / 25000, int(fields[1]) / 25000, fields[2]))
        return words
    if suffix == ".txt":
        word = re.search(r"^Text:\s*(\S+)", text, re.MULTILINE)
        duration = re.search(r"^Duration:\s*([\d.]+)", text, re.MULTILINE)
        if not word or not duration:
            raise ValueError("an LRW .txt needs 'Text:' and 'Duration:' lines")
        half = float(duration.group(1)) / 2
        return [(video_s / 2 - half, video_s / 2 + half, word.group(1))]
    entries = json.loads(text)
    return [(float(e["start"]), float(e["end"]), str(e["text"])) for e in entries]
