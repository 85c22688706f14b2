"""Audio-visual offset: how many frames the audio lags the mouth, from lip opening against loudness."""
from __future__ import annotations

import numpy as np

from avprep.features.timebase import fit_length


def frame_windows(sample_rate: int, fps: float, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """First and end sample of each frame's audio window: one frame long, centred on the frame's time."""
    hop = sample_rate / fps
    half = int(round(hop / 2))
    centres = np.round(np.arange(n_frames) * hop).astype(int)
    return centres - half, centres + half


def frame_has_audio(sample_rate: int, fps: float, n_frames: int, audio_start: int, audio_end: int) -> np.ndarray:
    """Per frame: whether its audio window (inside the video, which starts at 0) lies within the real audio,
    samples ``audio_start`` to ``audio_end``. False where the track starts late, ends early or is missing."""
    first, end = frame_windows(sample_rate, fps, n_frames)
    return (np.maximum(first, 0) >= audio_start) & (end <= audio_end)


def loudness_envelope(audio: np.ndarray, sample_rate: int, fps: float, n_frames: int,
                      audio_start: int = 0) -> np.ndarray:
    """RMS loudness (dB) of the audio in each frame's window (``frame_windows``); NaN where the frame has no real
    audio (``frame_has_audio``: the track starts at sample ``audio_start`` and ends with ``audio``)."""
    first, end = frame_windows(sample_rate, fps, n_frames)
    half = -int(first[0])
    padded = np.pad(fit_length(audio.astype(np.float64), max(int(end[-1]), 0)), (half, 0))
    energy = np.concatenate([[0.0], np.cumsum(padded**2)])
    power = (energy[end + half] - energy[first + half]) / max(2 * half, 1)
    loudness = 10 * np.log10(power + 1e-10)
    loudness[~frame_has_audio(sample_rate, fps, n_frames, audio_start, len(audio))] = np.nan
    return loudness


def estimate_offset(mouth: np.ndarray, loudness: np.ndarray, max_lag: int = 15) -> tuple[int, float]:
    """(offset, confidence): the lag in frames that best lines loudness up with mouth opening.

    Positive offset: the audio lags the video (sound comes ``offset`` frames after the mouth moves). The
    Pearson correlation of mouth[t] with loudness[t + lag] is computed at every lag in +-``max_lag``; the
    confidence is the best correlation minus the median one (0: no evidence; in-sync talking faces give about
    0.3-0.8). Frames without a face (NaN mouth) are left out.
    """
    valid = np.isfinite(mouth) & np.isfinite(loudness)
    if valid.sum() < 2 * max_lag + 10:
        return 0, 0.0
    lags = np.arange(-max_lag, max_lag + 1)
    scores = np.array([_correlation(mouth, loudness, lag) for lag in lags])
    if not np.isfinite(scores).any():
        return 0, 0.0
    best = int(np.nanargmax(scores))
    return int(lags[best]), float(scores[best] - np.nanmedian(scores))


def _correlation(mouth: np.ndarray, audio: np.ndarray, lag: int) -> float:
    """Pearson correlation of mouth[t] and audio[t + lag] over the frames where both exist."""
    if lag >= 0:
        m, a = mouth[: len(mouth) - lag], audio[lag:]
    else:
        m, a = mouth[-lag:], audio[: len(audio) + lag]
    both = np.isfinite(m) & np.isfinite(a)
    if both.sum() < 3 or np.std(m[both]) == 0 or np.std(a[both]) == 0:
        return np.nan
    return float(np.corrcoef(m[both], a[both])[0, 1])


def shift_audio(audio: np.ndarray, offset_frames: int, sample_rate: int, fps: float) -> np.ndarray:
    """Audio moved ``offset_frames`` earlier (undoing a lag of that size), same length, silence padded."""
    shift = int(round(offset_frames * sample_rate / fps))
    out = np.zeros_like(audio)
    if shift >= 0:
        out[: len(audio) - shift] = audio[shift:]
    else:
        out[-shift:] = audio[: len(audio) + shift]
    return out
