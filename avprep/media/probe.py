"""Probe a media file with the ffmpeg binary alone (imageio-ffmpeg ships no ffprobe).

One cheap pass: a stream-copy ``framecrc`` run over the video packets (demux only, no decoding) gives the exact
frame count, the average rate and whether it varies, while ffmpeg's report of its input on stderr gives the
container and stream facts. One ffmpeg start instead of two saves ~20 ms a video, a twentieth of a 1 s clip.
"""
from __future__ import annotations

import dataclasses
import os
import re
import stat
import subprocess

import numpy as np

from avprep.media.ffmpeg import MediaError, classify_stderr, ffmpeg_exe, input_url


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """What a video file is, as far as the container and its packets say."""

    container: str
    duration_s: float
    video_codec: str
    width: int  # as displayed, i.e. after rotation
    height: int
    rotation: int  # degrees counter-clockwise the decoder turns the stored picture: 0, 90, 180 or 270
    nominal_fps: float  # what the stream header claims
    fps: float  # average over the packets actually present
    variable_fps: bool
    n_packets: int  # video packets, i.e. coded frames
    audio_streams: int
    audio_codec: str | None
    audio_sr: int | None
    audio_channels: int | None
    audio_start_s: float = 0.0  # first audio packet's time on the decoders' clock (> 0: the audio starts late)


_DURATION = re.compile(r"Duration: (N/A|(\d+):(\d+):(\d+(?:\.\d+)?))")
_START = re.compile(r"Duration: [^,]*, start: (-?\d+(?:\.\d+)?)")  # the input's time zero for every decoder
_STREAM = re.compile(r"Stream #\d+:\d+\S*: (Video|Audio): (.*)")
_SIZE = re.compile(r"\b(\d{2,5})x(\d{2,5})\b")
_FPS = re.compile(r"([\d.]+)(k?) (?:fps|tbr)\b")
_ROTATION = re.compile(r"(?:displaymatrix|Display Matrix): rotation of (-?[\d.]+) degrees", re.IGNORECASE)
_ROTATE_TAG = re.compile(r"^\s*rotate\s*:\s*(-?\d+)", re.MULTILINE)
_AUDIO = re.compile(r"(\d+) Hz, ([^,]+)")
_INPUT = re.compile(r"Input #0, ([^,]+(?:,[^ ]+)*), from")

# Channel layouts ffmpeg prints by name; "N channels" and "X.Y(...)" are parsed.
_NAMED_LAYOUTS = {"mono": 1, "stereo": 2, "downmix": 2, "quad": 4, "hexagonal": 6, "octagonal": 8,
                  "hexadecagonal": 16, "binaural": 2, "cube": 8}


def probe(path: str | os.PathLike, max_duration_s: float | None = None) -> MediaInfo:
    """Facts about ``path``; raises MediaError with a reason when it is not a usable video with audio."""
    path = os.fspath(path)
    _check_readable(path)
    result = subprocess.run(
        # genpts: MPEG program streams (GRID's .mpg) leave some packets' times out; ffmpeg fills them in
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-fflags", "+genpts", "-i", input_url(path),
         "-map", "0:v:0", "-map", "0:a:0?",
         "-c", "copy", "-f", "framecrc", "-"], capture_output=True, text=True, errors="replace")
    info = _parse_header(_input_report(result.stderr, path, "not a video"))
    if max_duration_s is not None and info["duration_s"] > max_duration_s:
        raise MediaError("too long", f"{info['duration_s']:.0f} s is over the {max_duration_s:.0f} s limit")
    packets = _packet_times(result.stdout, stream=0)
    audio_packets = _packet_times(result.stdout, stream=1)
    complaint = classify_stderr(result.stderr)
    if complaint.kind == "truncated" or (result.returncode != 0 and len(packets) == 0):
        raise complaint  # e.g. "partial file": the index promises packets the file no longer holds
    if len(packets) == 0:
        raise MediaError("no video stream", "the video stream holds no frames")
    fps, variable = _rate_from_packets(packets, info["nominal_fps"])
    if info["duration_s"] <= 0:
        info["duration_s"] = len(packets) / fps
    start = _START.search(result.stderr)
    audio_start_s = float(audio_packets[0] - float(start.group(1) if start else 0.0)) if len(audio_packets) else 0.0
    return MediaInfo(fps=fps, variable_fps=variable, n_packets=len(packets), audio_start_s=audio_start_s, **info)


def audio_channels(path: str | os.PathLike) -> int:
    """Channel count of the first audio stream of any media file (audio-only files included)."""
    for match in _STREAM.finditer(_input_header(os.fspath(path), "not a media file")):
        found = _AUDIO.search(match.group(2)) if match.group(1) == "Audio" else None
        if found:
            return channel_count(found.group(2))
    raise MediaError("no audio stream", "the file has no audio stream")


def _input_header(path: str, unreadable: str) -> str:
    """What ``ffmpeg -i`` says about ``path``; a MediaError (kind ``unreadable`` unless ffmpeg says more) when it
    cannot open it."""
    _check_readable(path)
    stderr = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", input_url(path)],
                            capture_output=True, text=True, errors="replace").stderr
    return _input_report(stderr, path, unreadable)


def _input_report(stderr: str, path: str, unreadable: str) -> str:
    """The part of ffmpeg's stderr that describes its input (up to where it starts on its outputs), or the
    MediaError that it says instead."""
    if "Input #0" not in stderr:
        error = classify_stderr(stderr, default=unreadable)
        if error.kind == "truncated" and not _has_mp4_signature(path):
            error = MediaError(unreadable, error.message)  # ffmpeg guessed MP4 from the extension alone
        raise error
    return re.split(r"^(?:Stream mapping:|Output #0)", stderr, maxsplit=1, flags=re.MULTILINE)[0]


def _check_readable(path: str) -> None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise MediaError("not found", "the file does not exist (or is a broken link)") from None
    if status.st_size == 0 and stat.S_ISREG(status.st_mode):  # a pipe or device has no size yet may stream media
        raise MediaError("empty file", "the file is zero bytes")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except PermissionError:
        raise MediaError("permission denied", "the file cannot be read with this user's permissions") from None


def _has_mp4_signature(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(12)[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")


def _parse_header(text: str) -> dict:
    video = audio = None
    audio_streams = 0
    for match in _STREAM.finditer(text):
        if match.group(1) == "Video" and video is None and "attached pic" not in match.group(2):
            video = match.group(2)
        elif match.group(1) == "Audio":
            audio_streams += 1
            audio = audio or match.group(2)
    if video is None:
        raise MediaError("no video stream", "the file has no video stream")
    if audio is None:
        raise MediaError("no audio stream", "the file has no audio stream")
    size = _SIZE.search(video)
    if not size:
        raise MediaError("not a video", "the video stream has no frame size")
    width, height = int(size.group(1)), int(size.group(2))
    rotation = _rotation(text)
    if rotation in (90, 270):
        width, height = height, width
    audio_match = _AUDIO.search(audio)
    duration = _DURATION.search(text)
    container = _INPUT.search(text)
    return dict(
        container=container.group(1) if container else "unknown",
        duration_s=_seconds(duration),
        video_codec=video.split()[0].rstrip(","),
        width=width, height=height, rotation=rotation,
        nominal_fps=_nominal_fps(video),
        audio_streams=audio_streams,
        audio_codec=audio.split()[0].rstrip(","),
        audio_sr=int(audio_match.group(1)) if audio_match else None,
        audio_channels=channel_count(audio_match.group(2)) if audio_match else None,
    )


def _seconds(match: re.Match | None) -> float:
    if match is None or match.group(1) == "N/A":
        return 0.0
    return int(match.group(2)) * 3600 + int(match.group(3)) * 60 + float(match.group(4))


def _nominal_fps(video: str) -> float:
    """The header's rate, with ffmpeg's rounded NTSC rates (29.97, 59.94, 23.98) restored to n*1000/1001."""
    match = _FPS.search(video)
    if not match:
        return 0.0
    rate = float(match.group(1)) * (1000 if match.group(2) else 1)
    ntsc = round(rate * 1.001)
    if rate != round(rate) and abs(rate * 1.001 - ntsc) < 0.01:
        return ntsc * 1000 / 1001
    return rate


def _rotation(text: str) -> int:
    """Degrees counter-clockwise, as ffmpeg's autorotate will apply them, folded into 0/90/180/270."""
    match = _ROTATION.search(text)
    if match:
        return int(round(float(match.group(1)))) % 360 // 90 * 90
    tag = _ROTATE_TAG.search(text)  # old containers: clockwise "rotate" tag
    return (-int(tag.group(1))) % 360 // 90 * 90 if tag else 0


def channel_count(layout: str) -> int:
    """Channels in an ffmpeg layout name: 'mono', 'stereo', '5.1(side)', '6 channels', ..."""
    layout = layout.strip()
    if layout in _NAMED_LAYOUTS:
        return _NAMED_LAYOUTS[layout]
    match = re.match(r"(\d+) channels", layout)
    if match:
        return int(match.group(1))
    match = re.match(r"(\d+)\.(\d+)", layout)
    if match:
        return int(match.group(1)) + int(match.group(2))
    raise MediaError("decode error", f"unknown audio channel layout {layout!r}")


def _packet_times(framecrc: str, stream: int) -> np.ndarray:
    """Presentation times in seconds, sorted, of one output stream's packets listed by ffmpeg's ``framecrc``."""
    time_base = None
    pts = []
    for line in framecrc.splitlines():
        if line.startswith(f"#tb {stream}:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            time_base = int(num) / int(den)
        elif line.startswith(f"{stream},"):
            pts.append(int(line.split(",")[2]))
    if time_base is None:
        return np.zeros(0)
    return np.sort(np.asarray(pts, dtype=np.float64)) * time_base


def _rate_from_packets(times: np.ndarray, nominal_fps: float) -> tuple[float, bool]:
    """Average frames per second over the packets, and whether the frame intervals vary (VFR)."""
    if len(times) < 2:
        return (nominal_fps or 25.0), False
    steps = np.diff(times)
    typical = float(np.median(steps))
    if typical <= 0:
        return (nominal_fps or 25.0), False
    span = times[-1] - times[0] + typical
    fps = len(times) / span
    variable = bool(np.max(np.abs(steps - typical)) > 0.1 * typical)
    if not variable and nominal_fps > 0 and abs(nominal_fps - fps) / fps < 0.01:
        fps = nominal_fps  # exact header rate (e.g. 29.97) rather than a rounded packet average
    return fps, variable
