"""One time base for every audio feature, so features and video frames share the clock of ``audio.flac``."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimedFeature:
    """Feature rows on the video's clock: row ``j`` is centred at ``start_s + j / rate_hz`` seconds.

    ``window_s`` is how much audio one row sees, ``hop_s`` the audio step between rows; ``time_axis`` is the
    axis of ``values`` that runs over time (1 for a spectrogram image stored frequency-first).
    """

    values: np.ndarray
    rate_hz: float
    start_s: float
    window_s: float
    hop_s: float
    time_axis: int = 0

    def times(self) -> np.ndarray:
        """Centre time of each step along ``time_axis``, in seconds."""
        return self.start_s + np.arange(self.values.shape[self.time_axis]) / self.rate_hz

    def describe(self) -> dict:
        """JSON-able summary for ``record.json``: shape, dtype and the time base."""
        return {
            "shape": [int(n) for n in self.values.shape],
            "dtype": str(self.values.dtype),
            "rate_hz": float(self.rate_hz),
            "start_s": float(self.start_s),
            "window_s": float(self.window_s),
            "hop_s": float(self.hop_s),
            "time_axis": int(self.time_axis),
        }


def rows_for_video(rate_hz: float, fps: float, n_frames: int) -> int:
    """Rows a ``rate_hz`` feature needs to span the video: ``round(n_frames / fps * rate_hz)``, never one short."""
    return int(round(n_frames / fps * rate_hz))


def fit_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """Zero-pad at the end or crop to exactly ``n_samples``: audio past the video's end is not needed."""
    audio = np.asarray(audio)[:n_samples]
    return np.pad(audio, (0, n_samples - len(audio)))


def centred_frames(signal: np.ndarray, n_rows: int, window: int, hop: int) -> np.ndarray:
    """``(n_rows, window)`` view whose row ``j`` is centred on sample ``j * hop``.

    The signal is zero-padded by half a window at the start and as far as needed at the end (or cropped), so
    row ``j`` always exists and sits at ``j * hop / SAMPLE_RATE`` seconds.
    """
    padded = np.pad(fit_length(signal, (n_rows - 1) * hop + window - window // 2), (window // 2, 0))
    return np.lib.stride_tricks.sliding_window_view(padded, window)[::hop][:n_rows]


def windows_at_frames(rows: np.ndarray, rate_hz: float, times_s: np.ndarray, start_s: float,
                      count: int) -> np.ndarray:
    """(len(times_s), count, dims): for each time, the ``count`` feature rows from ``start_s`` after it (rows
    at ``rate_hz`` from time 0; zeros where the window reaches past either end). ATVGnet's MFCC windows."""
    out = np.zeros((len(times_s), count, rows.shape[1]), np.float32)
    for i, time in enumerate(times_s):
        first = int(round((time + start_s) * rate_hz))
        lo, hi = max(first, 0), min(first + count, len(rows))
        if hi > lo:
            out[i, lo - first: hi - first] = rows[lo:hi]
    return out
