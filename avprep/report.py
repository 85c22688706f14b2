"""One self-contained HTML page about a prep or shard folder, so a person can judge a dataset at a glance.

Everything is inline (plots as base64 PNG from matplotlib's Agg canvas, pictures as base64 JPEG/PNG, CSS in the
page, no JavaScript), so the page can be mailed or archived on its own and opened offline.
"""
from __future__ import annotations

import base64
import collections
import dataclasses
import html
import io
import itertools
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from avprep.inspect import contact_sheet
from avprep.media.ffmpeg import MediaError
from avprep.pipeline.config import FaceConfig
from avprep.shard.folder import ShardDir
from avprep.shard.tars import shard_samples

MAX_VIDEOS = 2000  # frames.parquet files read for the face histograms, spread over the manifest
FRAMES_PER_VIDEO = 100  # face frames kept per video, evenly spaced: the shape of a distribution, not every row
MAX_FAILURES = 10  # failed videos listed by name
MAX_BARS = 40  # bars in a bar chart (the largest counts)
SHEET_FRAMES = 6  # frames per contact sheet
SAMPLES_SHOWN = 8  # shard samples drawn, spread over the splits
SAMPLE_IMAGES = ("image.jpg", "f000.jpg", "lr.png", "wrong.jpg", "ref.jpg", "nmfc000.png")
FACE_COLUMNS = ("iod_px", "yaw", "pitch", "roll", "blur", "mesh_score")
MIME = {"jpg": "image/jpeg", "png": "image/png"}

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 1180px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 18px; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
p.how { color: #555; margin: 4px 0 12px; max-width: 900px; }
p.missing { background: #fff4e5; border-left: 4px solid #f0a030; padding: 8px 12px; }
nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
img.plot, img.sheet { max-width: 100%; }
figure { margin: 12px 0; }
figcaption { color: #555; font-size: 13px; }
figure.sample img { height: 128px; image-rendering: pixelated; margin-right: 3px; }
""".strip()


@dataclasses.dataclass(frozen=True)
class Panel:
    """One histogram: its finite values are drawn, with dashed lines at ``marks`` (thresholds)."""

    title: str
    values: np.ndarray | None  # None: the column does not exist
    unit: str
    marks: tuple[float, ...] = ()
    bins: str = "linear"  # or "log" (heavy-tailed measures) or "integer" (one bin per whole number)


def write_report(source: str | Path, out_html: str | Path, *, max_sheets: int = 4) -> Path:
    """Write the page for ``source``, a prep folder (manifest.parquet) or a shard folder (dataset.json), to
    ``out_html``; a prep page shows up to ``max_sheets`` contact sheets. Returns the page's path."""
    source, out = Path(source), Path(out_html)
    if (source / "manifest.parquet").exists():
        title, sections = f"Prep report: {source.name}", prep_sections(source, max_sheets)
    elif (source / "dataset.json").exists():
        title, sections = f"Shard report: {source.name}", shard_sections(source)
    else:
        raise FileNotFoundError(f"{source} is neither a prep folder (no manifest.parquet) nor a shard folder "
                                "(no dataset.json)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_page(title, source, sections), encoding="utf-8")
    return out


# --- prep folders -------------------------------------------------------------------------------------------

def prep_sections(prep: Path, max_sheets: int) -> list[tuple[str, str]]:
    """(title, html) sections about a prep folder, from its manifest and its videos' frames.parquet files."""
    manifest = pq.read_table(prep / "manifest.parquet")
    ok = np.array([status == "ok" for status in _strings(manifest, "status")], dtype=bool)
    ids = np.array(_strings(manifest, "video_id"), dtype=object)
    speakers = np.array([s or "(no speaker)" for s in _strings(manifest, "speaker")], dtype=object)
    return [
        _prep_summary(manifest, ok, speakers),
        _failures(manifest, ~ok),
        _face_statistics(prep, list(ids[ok])),
        _video_statistics(manifest, ok),
        _section("Videos per speaker", "One bar per speaker: how many of its videos extracted. A few speakers "
                 "with most of the videos bias a model towards them; a speaker split needs many speakers.",
                 _bars(collections.Counter(speakers[ok]), "ok videos")),
        _contact_sheets(prep, list(ids[ok]), list(speakers[ok]), max_sheets),
    ]


def _prep_summary(manifest: pa.Table, ok: np.ndarray, speakers: np.ndarray) -> tuple[str, str]:
    seconds = _rows(manifest, "duration_s", ok)
    total = 0.0 if seconds is None else np.nansum(seconds)
    hours = "not recorded" if seconds is None else f"{total / 3600:.2f} h ({total:,.0f} s)"
    rows = [("videos", len(ok)), ("videos ok", int(ok.sum())), ("videos failed", int((~ok).sum())),
            ("hours of video (ok)", hours), ("frames decoded", _total(manifest, "n_frames", ok)),
            ("face frames", _total(manifest, "face_frames", ok)), ("good frames", _total(manifest, "good_frames", ok)),
            ("face tracks", _total(manifest, "n_tracks", ok)), ("speakers (ok videos)", len(set(speakers[ok])))]
    return _section("Summary", "Counts over the manifest; sums are over the videos that extracted. A good frame "
                    "has a face large, sharp and frontal enough for training (thresholds in FaceConfig).",
                    _table(("", "value"), rows))


def _total(table: pa.Table, name: str, rows: np.ndarray) -> str | int:
    values = _rows(table, name, rows)
    return "not recorded" if values is None else int(np.nansum(values))


def _failures(manifest: pa.Table, failed: np.ndarray) -> tuple[str, str]:
    how = ("Each failed video is a manifest row with a short reason (error_kind) and a one-line error; docs/extract.md "
           "lists what each reason means. Bars: videos per reason.")
    if not failed.any():
        return _section("Failures", how, "<p>No video failed.</p>")
    kinds = np.array(_strings(manifest, "error_kind"), dtype=object)[failed]
    counts = collections.Counter(kind or "(no reason)" for kind in kinds)
    columns = [_strings(manifest, name) for name in ("video_id", "error_kind", "error")]
    listed = [[column[i] for column in columns] for i in np.flatnonzero(failed)[:MAX_FAILURES]]
    return _section("Failures", how,
                    f'<div class="row">{_table(("reason", "videos"), counts.most_common())}'
                    f"{_bars(counts, 'failed videos')}</div>",
                    f"<p>The first {len(listed)} of {int(failed.sum())} failed videos:</p>",
                    _table(("video_id", "reason", "error"), listed))


def _face_statistics(prep: Path, video_ids: list[str]) -> tuple[str, str]:
    values, n_read = _face_frames(prep, video_ids)
    title = "Face statistics"
    if not n_read:
        return _section(title, "", _missing("Face statistics are absent: no extracted video has a frames.parquet "
                                            "(extracted with --no-face, or no video extracted)."))
    face = FaceConfig()
    panels = [Panel("face size: inter-ocular distance", values.get("iod_px"), "pixels in the source frame",
                    (face.min_iod_px,)),
              Panel("blur: variance of the Laplacian", values.get("blur"), "higher is sharper", (face.min_blur,),
                    bins="log"),
              Panel("yaw", values.get("yaw"), "degrees", (-face.max_yaw_deg, face.max_yaw_deg)),
              Panel("pitch", values.get("pitch"), "degrees", (-face.max_pitch_deg, face.max_pitch_deg)),
              Panel("roll", values.get("roll"), "degrees"),
              Panel("mesh confidence: face-presence score", values.get("mesh_score"), "0-1, from MediaPipe",
                    (face.min_mesh_score,))]
    how = (f"Frames with a face from {n_read} video(s), up to {FRAMES_PER_VIDEO} evenly spaced frames each. Dashed "
           "red lines: the default thresholds of a good frame; mass beyond them is lost to training. Small faces "
           "mean low-resolution crops; a wide yaw or pitch spread means profile views.")
    return _section(title, how, _histograms(panels))


def _face_frames(prep: Path, video_ids: list[str]) -> tuple[dict[str, np.ndarray], int]:
    """FACE_COLUMNS of the face frames of up to MAX_VIDEOS videos (spread over the list), and how many videos
    had a frames.parquet: enough for a distribution's shape without reading millions of rows."""
    parts, n_read = collections.defaultdict(list), 0
    for i in _spread(len(video_ids), MAX_VIDEOS):
        path = prep / "videos" / video_ids[i] / "frames.parquet"
        if not path.exists():
            continue
        table, n_read = pq.read_table(path), n_read + 1
        face = _floats(table, "face")
        rows = np.flatnonzero(face > 0) if face is not None else np.arange(table.num_rows)
        keep = rows[_spread(len(rows), FRAMES_PER_VIDEO)]
        for name in FACE_COLUMNS:
            column = _rows(table, name, keep)
            if column is not None:
                parts[name].append(column)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}, n_read


def _video_statistics(manifest: pa.Table, ok: np.ndarray) -> tuple[str, str]:
    min_confidence = FaceConfig().min_offset_confidence
    panels = [Panel("video duration", _rows(manifest, "duration_s", ok), "seconds"),
              Panel("A/V offset", _rows(manifest, "av_offset_frames", ok), "frames (positive: audio lags)",
                    bins="integer"),
              Panel("A/V offset confidence", _rows(manifest, "av_offset_confidence", ok),
                    "best minus median correlation", (min_confidence,))]
    how = ("Per extracted video. The A/V offset is the lag that best lines lip opening up with loudness; in-sync "
           "talking faces sit at 0 with a confidence of about 0.3-0.8. Offsets are trusted (and applied at shard "
           f"time) only right of the dashed line ({min_confidence}); a spread of confident non-zero offsets means "
           "badly synchronised sources. Panels without values: extracted without face analysis.")
    return _section("Durations and audio-video sync", how, _histograms(panels))


def _contact_sheets(prep: Path, video_ids: list[str], speakers: list[str], max_sheets: int) -> tuple[str, str]:
    title = "Contact sheets"
    how = ("What extract saw, as `avprep inspect` draws it: frames spread over each video with the face box and the "
           "68 landmarks (lips in red) above the aligned canonical crops. Crops should be steady and centred on "
           "the eyes, landmarks on the lips and jaw. One video per speaker first.")
    drawable = [(v, s) for v, s in zip(video_ids, speakers) if (prep / "videos" / v / "landmarks68.npy").exists()]
    if not drawable:
        return _section(title, how, _missing("No contact sheets: no extracted video has landmarks "
                                             "(extracted with --no-face, or no video extracted)."))
    speaker_of = dict(drawable)
    return _section(title, how, *(_sheet(prep, video_id, speaker_of[video_id])
                                  for video_id in _one_per_speaker(drawable, max_sheets)))


def _one_per_speaker(videos: list[tuple[str, str]], n: int) -> list[str]:
    """Up to ``n`` video ids, taking speakers in turn: different faces before more of the same one."""
    by_speaker = collections.defaultdict(list)
    for video_id, speaker in videos:
        by_speaker[speaker].append(video_id)
    turns = itertools.chain.from_iterable(itertools.zip_longest(*by_speaker.values()))
    return [video_id for video_id in turns if video_id is not None][:n]


def _sheet(prep: Path, video_id: str, speaker: str) -> str:
    """One contact sheet, or why it could not be drawn (e.g. the source video has moved since extract)."""
    try:
        image = contact_sheet(prep, video_id, SHEET_FRAMES)
    except (OSError, ValueError, MediaError) as error:
        return _missing(f"No contact sheet for {video_id}: {error}")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    return (f'<figure><img class="sheet" alt="{_esc(video_id)}" src="{_data_url("jpg", data)}">'
            f"<figcaption>{_esc(video_id)}, speaker {_esc(speaker)}</figcaption></figure>")


# --- shard folders ------------------------------------------------------------------------------------------

def shard_sections(folder: Path) -> list[tuple[str, str]]:
    """(title, html) sections about a shard folder, from dataset.json, index.parquet and the first tars."""
    dataset = ShardDir(folder).info
    index = pq.read_table(folder / "index.parquet") if (folder / "index.parquet").exists() else None
    recipe = dataset.get("recipe", {})
    fields = [(name, spec.get("dtype"), " x ".join(map(str, spec.get("shape", []))) or "-", spec.get("time_base"))
              for name, spec in dataset.get("fields", {}).items()]
    return [
        _section(f"Recipe: {recipe.get('name', '(unnamed)')}", "The recipe the shards were cut with "
                 "(pipelines/<name>.toml) and the plan behind them.",
                 _table(("setting", "value"), [(key, _setting(value)) for key, value in sorted(recipe.items())]
                        + [("speakers", str(len(dataset.get("speakers", [])))),
                           ("frame rates", _setting(dataset.get("fps"))),
                           ("sample rate", _setting(dataset.get("sample_rate"))), ("plan", dataset.get("plan"))])),
        _section("Fields", "Every member of every sample: <key>.<member> in the tars, with its dtype, shape and "
                 "time base. `avprep validate` checks each sample against this table.",
                 _table(("member", "dtype", "shape", "time base"), fields)),
        _splits(dataset, index),
        _shard_speakers(index),
        _shard_sizes(folder),
        _samples(folder, dataset),
    ]


def _setting(value) -> str:
    """Strings as they are, anything else as JSON: one left-aligned column of settings."""
    return value if isinstance(value, str) else json.dumps(value)


def _splits(dataset: dict, index: pa.Table | None) -> tuple[str, str]:
    in_index = collections.Counter(_strings(index, "split")) if index is not None else {}
    rows = [(split, info.get("samples"), in_index.get(split, "-"), len(info.get("shards", [])))
            for split, info in dataset.get("splits", {}).items()]
    return _section("Samples per split", "Samples and shards per split as dataset.json records them, and the "
                    "samples index.parquet lists; the two counts must agree.",
                    _table(("split", "samples", "in index.parquet", "shards"), rows))


def _shard_speakers(index: pa.Table | None) -> tuple[str, str]:
    title, how = "Samples per speaker", ("One bar per speaker and split: how many samples it gives. With a "
                                         "speaker split every speaker appears in one split only.")
    if index is None:
        return _section(title, how, _missing("index.parquet is missing: samples per speaker are unknown."))
    pairs = zip(_strings(index, "speaker"), _strings(index, "split"))
    return _section(title, how, _bars(collections.Counter(f"{speaker} ({split})" for speaker, split in pairs),
                                      "samples"))


def _shard_sizes(folder: Path) -> tuple[str, str]:
    sizes = np.array([path.stat().st_size / 1e6 for path in sorted(folder.glob("*.tar"))])
    how = (f"{len(sizes)} tar file(s), {sizes.sum():.1f} MB in all. Shards of one plan hold the same number of "
           "samples (the last of each split fewer), so sizes should cluster; an outlier is worth a look.")
    return _section("Shard sizes", how, _histograms([Panel("shard size", sizes, "MB")]))


def _samples(folder: Path, dataset: dict) -> tuple[str, str]:
    how = ("A few samples from the first shard of each split, their pictures as stored: the face crop, and when "
           "the recipe has them the low-resolution face (drawn enlarged), the wrong or reference face and the "
           "NMFC render.")
    firsts = [info["shards"][0] for info in dataset.get("splits", {}).values() if info.get("shards")]
    per_split = math.ceil(SAMPLES_SHOWN / max(len(firsts), 1))
    cards = [_sample_card(key, name, members)
             for name in firsts if (folder / name).exists()
             for key, members in _read_samples(folder / name, per_split).items()]
    if not cards:
        return _section("Samples", how, _missing("No samples to show: the shards hold none, or are missing."))
    return _section("Samples", how, f'<div class="row">{"".join(cards)}</div>')


def _read_samples(tar_path: Path, n: int) -> dict[str, dict[str, bytes]]:
    """The SAMPLE_IMAGES members of the first ``n`` samples of a tar (keys hold no dots), reading no further."""
    samples: dict[str, dict[str, bytes]] = {}
    for sample in itertools.islice(shard_samples(str(tar_path)), n):
        samples[sample["__key__"]] = {name: data for name, data in sample.items() if name in SAMPLE_IMAGES}
    return samples


def _sample_card(key: str, shard: str, members: dict[str, bytes]) -> str:
    images = "".join(f'<img title="{name}" alt="{name}" src="{_data_url(name.rsplit(".", 1)[1], members[name])}">'
                     for name in SAMPLE_IMAGES if name in members)
    return (f'<figure class="sample">{images}<figcaption>{_esc(key)}<br>{_esc(shard)}: '
            f"{_esc(', '.join(name for name in SAMPLE_IMAGES if name in members))}</figcaption></figure>")


# --- plots and HTML -----------------------------------------------------------------------------------------

def _histograms(panels: list[Panel]) -> str:
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(3.9 * columns, 2.9 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).flat
    for ax, panel in itertools.zip_longest(axes, panels):
        if panel is None:
            ax.set_visible(False)
        else:
            _histogram(ax, panel)
    return _plot(figure)


def _histogram(ax, panel: Panel) -> None:
    values = np.array([]) if panel.values is None else panel.values[np.isfinite(panel.values)]
    ax.set_title(f"{panel.title}  (n={len(values):,})", fontsize=10)
    ax.set_xlabel(panel.unit, fontsize=9)
    ax.tick_params(labelsize=8)
    if not len(values):
        ax.text(0.5, 0.5, "not recorded" if panel.values is None else "no values", ha="center", va="center",
                transform=ax.transAxes, color="#888")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    kind = "linear" if panel.bins == "log" and not values.max() > values.min() > 0 else panel.bins
    ax.hist(values, bins=_bins(values, kind), color="#4c78a8")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if kind == "log":
        ax.set_xscale("log")
    for mark in panel.marks:
        ax.axvline(mark, color="#d62728", linestyle="--", linewidth=1)


def _bins(values: np.ndarray, kind: str):
    """40 bins, log-spaced for heavy tails; or one per whole number (offsets) while that is at most 60."""
    low, high = values.min(), values.max()
    if kind == "log":
        return np.geomspace(low, high, 41)
    if kind == "integer" and high - low <= 60:
        pad = max(0.0, (10 - (high - low)) / 2)  # a span of at least ten: a lone 0 reads as a spike, not a block
        return np.arange(math.floor(low - pad) - 0.5, math.ceil(high + pad) + 1.5)
    return 40


def _bars(counts: collections.Counter, label: str) -> str:
    """Horizontal bars of the MAX_BARS largest counts, largest on top, each with its number."""
    if not counts:
        return _missing("Nothing to count.")
    top = counts.most_common(MAX_BARS)[::-1]
    figure = Figure(figsize=(7, 0.8 + 0.24 * len(top)), layout="constrained")
    ax = figure.subplots()
    bars = ax.barh([str(name) for name, _ in top], [count for _, count in top], color="#4c78a8")
    ax.bar_label(bars, fontsize=8, padding=2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(label if len(counts) <= MAX_BARS else f"{label} (the {MAX_BARS} largest of {len(counts)})")
    ax.tick_params(labelsize=8)
    ax.margins(x=0.1)
    return _plot(figure)


def _plot(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return f'<img class="plot" alt="plot" src="{_data_url("png", buffer.getvalue())}">'


def _data_url(extension: str, data: bytes) -> str:
    return f"data:{MIME[extension]};base64,{base64.b64encode(data).decode('ascii')}"


def _table(header: tuple[str, ...], rows) -> str:
    head = "".join(f"<th>{_esc(name)}</th>" for name in header)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return f'<td class="n">{value:,}</td>'
    return f"<td>{_esc('' if value is None else value)}</td>"


def _section(title: str, how: str, *parts: str) -> tuple[str, str]:
    how_html = f'<p class="how">{_esc(how)}</p>' if how else ""
    return title, f'<section id="{_anchor(title)}"><h2>{_esc(title)}</h2>{how_html}{"".join(parts)}</section>'


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _page(title: str, source: Path, sections: list[tuple[str, str]]) -> str:
    links = " ".join(f'<a href="#{_anchor(name)}">{_esc(name)}</a>' for name, _ in sections)
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title><style>{CSS}</style></head>'
            f"<body><h1>{_esc(title)}</h1><p class=\"how\">{_esc(str(source.resolve()))}</p><nav>{links}</nav>"
            f"{''.join(body for _, body in sections)}</body></html>\n")


def _missing(text: str) -> str:
    return f'<p class="missing">{_esc(text)}</p>'


def _esc(value) -> str:
    return html.escape(str(value))


def _strings(table: pa.Table, name: str) -> list:
    """The column as Python values, or Nones when the table lacks it."""
    return table[name].to_pylist() if name in table.column_names else [None] * table.num_rows


def _floats(table: pa.Table, name: str) -> np.ndarray | None:
    """The column as float64 with NaN for nulls, or None when the table lacks it (e.g. extracted with --no-face)."""
    return np.array(table[name].to_pylist(), dtype=float) if name in table.column_names else None


def _rows(table: pa.Table, name: str, rows: np.ndarray) -> np.ndarray | None:
    """The column's float values at ``rows`` (a mask or indices), or None when the table lacks the column."""
    values = _floats(table, name)
    return None if values is None else values[rows]


def _spread(n_items: int, n_max: int) -> np.ndarray:
    """Indices of at most ``n_max`` of ``n_items`` items, evenly spread, first and last included."""
    if n_items <= n_max:
        return np.arange(n_items)
    return np.linspace(0, n_items - 1, n_max).round().astype(int)
