"""Turn command-line inputs (folders, files, list files) into videos with stable ids, speakers, labels, the
dataset's own splits and metadata (dataset layouts: avprep.pipeline.layouts)."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
from pathlib import Path

from avprep.pipeline.layouts import LAYOUTS, detect_layout, path_facts

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".ts", ".mts", ".flv", ".3gp",
                    ".wmv"}  # what folders are searched for (GRID ships .mpg)
LIST_EXTENSIONS = {".txt", ".lst", ".list", ".csv"}


class InputError(Exception):
    """A usage problem with the inputs themselves (missing path, unreadable list): the run cannot start."""


@dataclasses.dataclass(frozen=True)
class VideoSource:
    path: str  # absolute
    video_id: str
    speaker: str | None
    label: str | None = None  # LRW: the word; GRID: the sentence code; or a metadata "label" column
    dataset_split: str | None = None  # the dataset's own split (LRW's folders) or a metadata "split" column
    transcript: str | None = None  # side file with timed words (layouts.read_timed_words)
    attributes: dict = dataclasses.field(default_factory=dict, hash=False)  # other metadata columns; None: missing


def discover(inputs: list[str | os.PathLike], meta_csv: str | os.PathLike | None = None,
             layout: str = "auto") -> list[VideoSource]:
    """Every video named by ``inputs``: folders are searched recursively for video extensions; a file named
    directly is a list of paths (one per line, ``#`` comments, relative to the list's folder) when it is text
    (``.txt``, ``.lst``, ``.csv`` or text content without a video extension), and otherwise a video, whatever
    its extension (extract probes it as media). Links to folders and files are followed, link cycles are read
    once, and a video reached by several paths is listed once (by a path without links where there is one). Ids come
    from the path relative to the folder (or list) that named it; speaker, label and dataset split from the
    dataset ``layout`` of that folder (``auto``: recognised from its tree), overridden by the columns of
    ``meta_csv``."""
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    found: dict[str, tuple[str, str]] = {}  # the file itself (links resolved) -> (root, absolute path as reached)

    def add(root: Path, path: Path) -> None:  # of several paths to one file: a path without links, else the first
        real, reached = os.path.realpath(path), (str(root), os.path.abspath(path))
        found[real] = min(found.get(real, reached), reached,
                          key=lambda candidate: (os.path.realpath(candidate[1]) != candidate[1], candidate[1]))

    for item in map(Path, inputs):
        if item.is_dir():
            for path in _walk_videos(item):
                add(item, path)
        elif item.is_file() and _is_list(item):
            for path in _read_list(item):
                add(item.parent if _is_under(path, item.parent) else path.parent, path)
        elif os.path.lexists(item):  # a video, a broken link or a special file: extract says what it is
            add(item.parent, item)
        else:
            raise InputError(f"input not found: {item}")
    rows, columns = _read_meta(meta_csv) if meta_csv else ({}, [])
    layouts = {root: layout for root, _ in found.values()}
    if layout == "auto":
        relatives: dict[str, list[str]] = {}
        for root, path in found.values():
            relatives.setdefault(root, []).append(Path(os.path.relpath(path, os.path.abspath(root))).as_posix())
        layouts = {root: detect_layout(paths) for root, paths in relatives.items()}
    sources = []
    for root, path in sorted(found.values(), key=lambda reached: reached[1]):
        relative = os.path.relpath(path, os.path.abspath(root))
        video_id = video_id_for(relative)
        try:
            facts = path_facts(layouts[root], Path(os.path.abspath(root)), Path(path))
        except ValueError as error:
            raise InputError(f"--layout {layouts[root]}: {error}") from None
        row = rows.get(video_id) or rows.get(path) or {}
        sources.append(_with_meta(VideoSource(path, video_id, facts.speaker, facts.label, facts.dataset_split,
                                              facts.transcript), row, columns))
    return _disambiguate(sources)


def video_id_for(relative_path: str) -> str:
    """A stable id safe as a folder name and a WebDataset key (no dots): ``spk/clip 1.mp4`` -> ``spk-clip_1-<hash>``.

    The readable part keeps letters, digits, ``_`` and ``-``; when that loses anything (spaces, unicode, dots, a
    leading dash) a short hash of the relative path keeps ids of different files apart.
    """
    stem = os.path.splitext(relative_path)[0].replace(os.sep, "/")
    readable = "-".join(re.sub(r"[^A-Za-z0-9_-]+", "_", part) for part in stem.split("/")).lstrip("-_")
    if readable == stem.replace("/", "-") and readable:
        return readable
    return f"{readable[:80] or 'video'}-{_short_hash(relative_path)}"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _walk_videos(root: Path):
    """Video files under ``root``, following links to folders and files (datasets assembled from links to shared
    storage); a folder reached again (a link cycle, or two links to one folder) is read once."""
    visited = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            subfolders[:] = []
            continue
        visited.add(real)  # real folders before links to folders, so a folder is read where it is
        subfolders[:] = sorted((d for d in subfolders if not d.startswith(".")),
                               key=lambda d: (os.path.islink(os.path.join(folder, d)), d))
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                yield Path(folder) / name


def _is_list(path: Path) -> bool:
    """A list file: a list extension, or no video extension and a first KiB that is UTF-8 text without NULs."""
    suffix = path.suffix.lower()
    if suffix in LIST_EXTENSIONS or suffix in VIDEO_EXTENSIONS:
        return suffix in LIST_EXTENSIONS
    try:
        with open(path, "rb") as handle:
            head = handle.read(1024)
    except OSError:
        return False  # unreadable: extract reports it as the video it may be
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not just a character cut at the KiB boundary
            return False
    return bool(head) and b"\0" not in head


def _read_list(list_file: Path) -> list[Path]:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read list file {list_file}: {error}") from None
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [p if p.is_absolute() else list_file.parent / p for p in map(Path, entries)]


def _is_under(path: Path, folder: Path) -> bool:
    return os.path.abspath(path).startswith(os.path.abspath(folder) + os.sep)


# Metadata columns with a meaning of their own; every other column is an attribute (gender, age, ...).
META_KEYS = ("video_id", "path", "speaker", "label", "split")
# Names an attribute may not take: extract's own record keys and the keys of a sample's meta.json.
RESERVED = {"status", "error", "error_kind", "fps", "duration_s", "n_frames", "config_hash", "dataset_split",
            "attributes", "tracks", "arrays", "width", "height", "key", "track", "start_frame", "sample_rate",
            "speaker_index", "label_index", "audio_start_s", "av_offset_frames", "audio_shift_s", "shard"}


def _read_meta(meta_csv: str | os.PathLike) -> tuple[dict[str, dict], list[str]]:
    """(``video_id`` or absolute ``path`` -> row, attribute column names) from a CSV keyed by ``video_id`` or
    ``path``. Empty cells are missing values (None); numbers are read as numbers."""
    try:
        with open(meta_csv, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows, header = list(reader), reader.fieldnames or []
    except OSError as error:
        raise InputError(f"cannot read metadata {meta_csv}: {error}") from None
    if not ({"video_id", "path"} & set(header)) or len(header) < 2:
        raise InputError(f"{meta_csv} needs a 'video_id' or 'path' column and at least one other column")
    clash = sorted(RESERVED & set(header))
    if clash:
        raise InputError(f"{meta_csv}: columns {clash} are names extract uses itself; rename them")
    folder = os.path.dirname(os.path.abspath(meta_csv))
    keyed = {}
    for row in rows:
        values = {name: _value(row.get(name)) for name in header if name not in ("video_id", "path")}
        if row.get("video_id"):
            keyed[row["video_id"]] = values
        if row.get("path"):
            keyed[os.path.abspath(os.path.join(folder, row["path"]))] = values
    return keyed, [name for name in header if name not in META_KEYS]


def _value(cell: str | None) -> str | int | float | None:
    cell = (cell or "").strip()
    if not cell:
        return None
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell


def _with_meta(source: VideoSource, row: dict, columns: list[str]) -> VideoSource:
    """The metadata row's speaker, label and split where it has them; every attribute column, None if missing."""
    text = {key: None if row.get(key) is None else str(row[key]) for key in ("speaker", "label", "split")}
    return dataclasses.replace(
        source, speaker=text["speaker"] or source.speaker, label=text["label"] or source.label,
        dataset_split=text["split"] or source.dataset_split, attributes={name: row.get(name) for name in columns})


def _disambiguate(sources: list[VideoSource]) -> list[VideoSource]:
    """Two files with the same id (``a.mp4`` and ``a.mkv``): both get a hash of their full path appended."""
    counts: dict[str, int] = {}
    for source in sources:
        counts[source.video_id] = counts.get(source.video_id, 0) + 1
    return [s if counts[s.video_id] == 1 else dataclasses.replace(s, video_id=f"{s.video_id}-{_short_hash(s.path)}")
            for s in sources]
