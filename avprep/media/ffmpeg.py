"""Finding the ffmpeg binary and turning its complaints into one-line reasons."""
from __future__ import annotations

import functools
import os
import shutil


class MediaError(Exception):
    """A video that cannot be used, with a short machine-readable ``kind`` and a one-line message.

    ``kind`` is what the manifest's ``error_kind`` column and the run summary group by.
    """

    def __init__(self, kind: str, message: str = ""):
        self.kind = kind
        self.message = message or kind
        super().__init__(f"{kind}: {message}" if message else kind)


@functools.cache
def ffmpeg_exe() -> str:
    """The ffmpeg binary: ``$AVPREP_FFMPEG``, else ``ffmpeg`` on PATH, else the one shipped by imageio-ffmpeg."""
    explicit = os.environ.get("AVPREP_FFMPEG")
    if explicit:
        return explicit
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def input_url(path: str | os.PathLike) -> str:
    """An ffmpeg input for a local file that no name can subvert.

    The ``file:`` protocol with an absolute path keeps names starting with a dash from reading as options
    and names containing a colon from reading as protocols.
    """
    return "file:" + os.path.abspath(os.fspath(path))


# ffmpeg stderr fragments -> reason kinds, most specific first.
_STDERR_REASONS = [
    ("moov atom not found", "truncated"),
    ("partial file", "truncated"),
    ("Permission denied", "permission denied"),
    ("No such file or directory", "not found"),
    ("Invalid data found when processing input", "not a video"),
    ("does not contain any stream", "not a video"),
]


def classify_stderr(stderr: str, default: str = "decode error") -> MediaError:
    """Turn ffmpeg's stderr into a MediaError whose message is the most telling line of it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for fragment, kind in _STDERR_REASONS:
        for line in lines:
            if fragment in line:
                return MediaError(kind, _shorten(line))
    last = lines[-1] if lines else "ffmpeg failed without a message"
    return MediaError(default, _shorten(last))


def _shorten(line: str, limit: int = 200) -> str:
    # Drop the "[mov,mp4 @ 0x...]" prefix and any absolute file path ffmpeg echoes back.
    if line.startswith("[") and "] " in line:
        line = line.split("] ", 1)[1]
    return line if len(line) <= limit else line[: limit - 1] + "…"
