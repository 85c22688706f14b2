"""Ready-made sets of test media: a small corpus of talking heads, and a catalogue of broken or odd files.

The demo corpus gives tests, benchmarks and ``avprep demo`` realistic input with ground truth. The
catalogue lists, for each file, the failure kind the pipeline should report ("" when the file is
merely unusual and must be processed successfully).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from avprep.media.encode import run_ffmpeg
from avprep.media.ffmpeg import input_url
from avprep.synth.faces import IDENTITIES
from avprep.synth.talking_head import VOICES, make_talking_head

# Valid clips in the catalogue are short, so the whole catalogue takes seconds to make.
_SHORT = 2.0
# Longer than the pipeline's default 4 h limit; built by looping one encoded minute.
_TOO_LONG_MINUTES = 300


def make_demo_corpus(
    out_dir: str | os.PathLike,
    *,
    speakers: int = 4,
    clips_per_speaker: int = 3,
    seconds: float = 4.0,
    fps: float | str = 25,
    size: tuple[int, int] = (640, 360),
    seed: int = 0,
) -> list[Path]:
    """Write ``out_dir/<speaker>/clipNN.mp4`` and ground truth, each clip with its own seed; return the paths.

    Speakers cycle through IDENTITIES (a second round gets names like ``astronaut_1``). A clip whose
    ground truth already matches the request is kept, so running again is cheap.
    """
    paths = []
    for s in range(speakers):
        identity = IDENTITIES[s % len(IDENTITIES)]
        rounds = s // len(IDENTITIES)
        speaker = identity if rounds == 0 else f"{identity}_{rounds}"
        for c in range(clips_per_speaker):
            path = Path(out_dir) / speaker / f"clip{c:02d}.mp4"
            wanted = dict(identity=identity, seconds=seconds, fps=fps, size=size, seed=seed + s * clips_per_speaker + c)
            if not _is_current(path, wanted):
                path.parent.mkdir(parents=True, exist_ok=True)
                make_talking_head(path, **wanted)
            paths.append(path)
    return paths


# Words of an LRW-shaped demo tree (LRW's own vocabulary begins ABOUT, ABSOLUTELY, ABUSE, ACCESS, ...).
DEMO_WORDS = ("ABOUT", "AFTER", "AGAIN", "BEFORE", "COULD", "EVERY", "GREAT", "HOUSE", "MONEY", "NEVER", "PEOPLE",
              "RIGHT", "SPEND", "THINK", "WORLD", "YEARS")
LRW_SECONDS = 1.16  # LRW's clips: 29 frames at 25 fps


def make_lrw_demo(
    out_dir: str | os.PathLike,
    *,
    words: int = 4,
    speakers: int = 4,
    seconds: float = LRW_SECONDS,
    fps: float | str = 25,
    size: tuple[int, int] = (320, 240),
    seed: int = 0,
) -> list[Path]:
    """Write an LRW-shaped tree, ``out_dir/lipread_mp4/<WORD>/<split>/<WORD>_NNNNN.mp4``: every word said by
    every speaker, the same generated utterance (one speech seed per word, in each speaker's voice), so a word
    classifier can learn it. The last speaker's clips are the test split, the one before it the validation
    split (with 3 speakers or more), the rest train. LRW publishes no speaker ids; neither does this tree."""
    if not 1 <= words <= len(DEMO_WORDS):
        raise ValueError(f"words: 1 to {len(DEMO_WORDS)}")
    paths = []
    for w, word in enumerate(DEMO_WORDS[:words]):
        numbers: dict[str, int] = {}
        for s in range(speakers):
            split = "test" if s == speakers - 1 and speakers > 1 else "val" if s == speakers - 2 and speakers > 2 \
                else "train"
            numbers[split] = numbers.get(split, 0) + 1
            path = Path(out_dir) / "lipread_mp4" / word / split / f"{word}_{numbers[split]:05d}.mp4"
            wanted = dict(identity=IDENTITIES[s % len(IDENTITIES)], seconds=seconds, fps=fps, size=size,
                          seed=seed + w)
            if not _is_current(path, wanted):
                path.parent.mkdir(parents=True, exist_ok=True)
                make_talking_head(path, **wanted)
            paths.append(path)
    return paths


def _is_current(path: Path, wanted: dict) -> bool:
    """Whether ``path`` and its ground truth exist and were made with the ``wanted`` arguments."""
    truth_path = path.with_suffix(".truth.json")
    if not (path.exists() and truth_path.exists()):
        return False
    try:
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        truth.get("identity") == wanted["identity"]
        and truth.get("fps_str") == str(wanted["fps"])
        and truth.get("size") == list(wanted["size"])
        and truth.get("seed") == wanted["seed"]
        and list(truth.get("voice", {}).values()) == list(VOICES[wanted["identity"]])
        # The clip is a whole number of frames long, so its duration is within half a frame of the request.
        and abs(truth.get("seconds", -1) - wanted["seconds"]) <= 0.5 / truth.get("fps", 1)
    )


def make_bad_catalogue(out_dir: str | os.PathLike) -> dict[str, str]:
    """Write the catalogue files into ``out_dir`` and return {file name: expected failure kind or ""}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Intermediate files live in a hidden folder inside out_dir, so finished files can be moved atomically.
    with tempfile.TemporaryDirectory(prefix=".catalogue-", dir=out) as tmp:
        work = Path(tmp)
        full = work / "full.mp4"
        short = work / "short.mp4"
        make_talking_head(full, identity="ross", seed=101)
        make_talking_head(short, identity="astronaut", seconds=_SHORT, seed=102)

        expected = {}
        for name, kind, make in _recipes(full, short):
            make(work / "item")
            os.replace(work / "item", out / name)
            expected[name] = kind
    return expected


def _recipes(full: Path, short: Path):
    """(file name, expected failure kind, function writing the file at a given path) for every entry."""
    return [
        ("empty.mp4", "empty file", lambda p: p.write_bytes(b"")),
        ("not_a_video.mp4", "not a video", lambda p: p.write_text("This is a text file, not a video.\n")),
        ("truncated.mp4", "truncated", lambda p: _truncate(full, p, 0.4)),
        ("truncated_moov_at_end.mp4", "truncated", lambda p: _truncated_moov_at_end(full, p)),
        ("audio_only.mp4", "no video stream", lambda p: _remux(short, p, "-vn")),
        ("no_audio.mp4", "no audio stream", lambda p: _remux(short, p, "-an")),
        ("silent.mp4", "silent audio", lambda p: _silent(short, p)),
        ("too_long.mp4", "too long", _too_long),
        ("with space.mp4", "", lambda p: shutil.copyfile(short, p)),
        ("-leading-dash.mp4", "", lambda p: shutil.copyfile(short, p)),
        ("ünïcödé 名前.mp4", "", lambda p: shutil.copyfile(short, p)),
        ("stereo_44k.mp4", "", lambda p: _talking_head(p, identity="phoebe", channels=2, sample_rate=44100)),
        ("mono_8k.mp4", "", lambda p: _talking_head(p, identity="chandler", sample_rate=8000)),
        ("rotated90.mp4", "", lambda p: run_ffmpeg(["-display_rotation", "90", *_copy(short, p, "mp4")])),
        ("vfr.mkv", "", lambda p: _variable_frame_rate(short, p)),
        ("clip.webm", "", lambda p: _transcode(short, p, "webm", "libvpx-vp9", "libopus",
                                               "-deadline", "realtime", "-cpu-used", "8", "-b:v", "0", "-crf", "40")),
        ("clip.avi", "", lambda p: _transcode(short, p, "avi", "mpeg4", "libmp3lame", "-q:v", "4")),
        ("clip.mov", "", lambda p: run_ffmpeg(_copy(short, p, "mov"))),
    ]  # fmt: skip


def _copy(src: Path, dst: Path, container: str, *options: str) -> list[str]:
    """ffmpeg arguments that copy the streams of ``src`` into ``dst`` without re-encoding."""
    return ["-i", input_url(src), *options, "-c", "copy", "-f", container, input_url(dst)]


def _remux(src: Path, dst: Path, *options: str) -> None:
    run_ffmpeg(_copy(src, dst, "mp4", *options))


def _truncate(src: Path, dst: Path, fraction: float) -> None:
    """The first ``fraction`` of the bytes of ``src``, as an interrupted download or copy leaves them."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def _truncated_moov_at_end(src: Path, dst: Path) -> None:
    """Cut half of an MP4 whose index (moov) is at the end, as plain ffmpeg writes it: the index is lost."""
    whole = dst.with_name("moov_at_end.mp4")
    _remux(src, whole)  # without +faststart the muxer writes moov after the media data
    _truncate(whole, dst, 0.5)


def _silent(src: Path, dst: Path) -> None:
    """The video of ``src`` with an AAC track of digital silence as long as the clip."""
    run_ffmpeg([
        "-i", input_url(src), "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
        "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-t", str(_SHORT),
        "-movflags", "+faststart", "-f", "mp4", input_url(dst),
    ])  # fmt: skip


def _too_long(dst: Path) -> None:
    """A 5-hour, 64x64, 1 fps clip with a quiet tone: one minute is encoded, then looped by stream copy.

    Encoding 5 hours of audio directly takes over a minute; looping a minute takes about a second.
    """
    minute = dst.with_name("minute.mp4")
    run_ffmpeg([
        "-f", "lavfi", "-i", "color=c=gray:s=64x64:r=1", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000",
        "-t", "60", "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-c:a", "aac", "-b:a", "6k",
        "-f", "mp4", input_url(minute),
    ])  # fmt: skip
    run_ffmpeg(["-stream_loop", str(_TOO_LONG_MINUTES - 1), *_copy(minute, dst, "mp4", "-movflags", "+faststart")])


def _talking_head(dst: Path, **options) -> None:
    """A short talking head written to ``dst``, leaving its ground truth out of the catalogue."""
    clip = dst.with_name("talking_head.mp4")
    make_talking_head(clip, seconds=_SHORT, seed=103, **options)
    os.replace(clip, dst)


def _variable_frame_rate(src: Path, dst: Path) -> None:
    """Re-encode with frame times jittered by up to 12 ms around 25 fps: irregular, still increasing.

    The video goes through MP4 first: its per-sample durations carry over into the Matroska blocks,
    whereas encoding straight to Matroska gives every packet the same default duration. The audio
    becomes Opus, whose encoder delay Matroska records, so the file's duration stays the clip's.
    """
    jittered = dst.with_name("vfr.mp4")
    run_ffmpeg([
        "-i", input_url(src), "-vf", "setpts=(N/25+0.012*sin(N*1.7))/TB", "-fps_mode", "vfr",
        # Millisecond encoder time base; the default 1/25 s would round the jitter away.
        "-enc_time_base:v", "1/1000", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
        "-an", "-f", "mp4", input_url(jittered),
    ])  # fmt: skip
    run_ffmpeg([
        "-i", input_url(jittered), "-i", input_url(src), "-map", "0:v", "-map", "1:a",
        "-c:v", "copy", "-c:a", "libopus", "-f", "matroska", input_url(dst),
    ])  # fmt: skip


def _transcode(src: Path, dst: Path, container: str, video_codec: str, audio_codec: str, *options: str) -> None:
    args = ["-i", input_url(src), "-c:v", video_codec, *options, "-c:a", audio_codec, "-f", container, input_url(dst)]
    run_ffmpeg(args)
