"""HeadGAN's low-level audio features: pyAudioAnalysis-style short-term features, summarised per video frame.

Short-term frames: 50 ms rectangular windows every 25 ms (pyAudioAnalysis' usual 0.050/0.025 s), frame ``i``
centred at ``i * 25`` ms. Per frame 21 features: zero-crossing rate, energy, energy entropy (10 sub-frames),
spectral centroid, spread, entropy (10 sub-bands), flux, roll-off (90 %), 13 MFCCs; plus their first
differences (0 on the first frame) -> 42. Per video frame ``k``: mean and standard deviation over the 40
short-term frames (1.0 s mid-term window) nearest-centred on ``k / fps`` (within 12.5 ms), clipped at the
ends of the audio -> 84 columns in the order of ``HEADGAN_COLUMNS``.

As in pyAudioAnalysis the signal is DC-removed and peak-normalised first, so the features do not depend on
the recording level. Differences from pyAudioAnalysis, for correctness: spectral bins sit at their true
frequencies (it shifts them by one bin), and the MFCCs use 40 HTK-mel triangles over 133-8000 Hz
(``mfcc.mel_filterbank``) instead of its filterbank, whose bin frequencies are scaled by a factor of two.
"""
from __future__ import annotations

import math

import numpy as np

from avprep.features.mfcc import dct_matrix, mel_filterbank
from avprep.features.timebase import TimedFeature, centred_frames
from avprep.media.audio import SAMPLE_RATE

ST_WINDOW = 800  # 50 ms
ST_STEP = 400  # 25 ms
MID_FRAMES = 40  # 1.0 s of short-term steps
N_BLOCKS = 10
ROLLOFF = 0.90
N_MEL = 40
N_MFCC = 13
EPS = 1e-8

_BASE = ["zcr", "energy", "energy_entropy", "spectral_centroid", "spectral_spread", "spectral_entropy",
         "spectral_flux", "spectral_rolloff", *[f"mfcc_{i}" for i in range(1, N_MFCC + 1)]]
_SHORT_TERM = [*_BASE, *[f"delta_{name}" for name in _BASE]]
HEADGAN_COLUMNS = tuple(f"{stat}_{name}" for stat in ("mean", "std") for name in _SHORT_TERM)


def headgan_lowlevel(audio: np.ndarray, fps: float, n_frames: int) -> TimedFeature:
    """``(n_frames, 84)``: mean and std of the 42 short-term features over 1 s centred on each video frame."""
    n_short = math.ceil(n_frames / fps * SAMPLE_RATE / ST_STEP)
    frames = centred_frames(_normalise(audio), n_short, ST_WINDOW, ST_STEP)
    short_term = _short_term_features(frames)
    short_term = np.hstack([short_term, np.diff(short_term, axis=0, prepend=short_term[:1])])
    first = np.round(np.arange(n_frames) * (SAMPLE_RATE / ST_STEP / fps) - (MID_FRAMES - 1) / 2).astype(int)
    mean, std = _window_stats(short_term, np.clip(first, 0, n_short), np.clip(first + MID_FRAMES, 0, n_short))
    window_s = ((MID_FRAMES - 1) * ST_STEP + ST_WINDOW) / SAMPLE_RATE
    return TimedFeature(np.hstack([mean, std]).astype(np.float32), fps, 0.0, window_s, 1.0 / fps)


def _normalise(audio: np.ndarray) -> np.ndarray:
    """DC-removed, peak-normalised float64 signal (pyAudioAnalysis' input convention)."""
    audio = np.asarray(audio, dtype=np.float64)
    audio = audio - audio.mean()
    return audio / (np.abs(audio).max(initial=0.0) + 1e-10)


def _short_term_features(frames: np.ndarray) -> np.ndarray:
    """``(n, 21)`` features of rectangular-windowed frames (columns as ``_BASE``)."""
    magnitude = np.abs(np.fft.rfft(frames, axis=1))
    magnitude /= magnitude.shape[1]
    centroid, spread = _centroid_spread(magnitude)
    return np.column_stack([
        np.abs(np.diff(np.sign(frames), axis=1)).sum(axis=1) / (2.0 * (frames.shape[1] - 1)),
        (frames ** 2).mean(axis=1),
        _block_entropy(frames),
        centroid,
        spread,
        _block_entropy(magnitude),
        _flux(magnitude),
        _rolloff(magnitude),
        _cepstra(magnitude),
    ])


def _block_entropy(rows: np.ndarray) -> np.ndarray:
    """Entropy (bits) of how each row's energy divides among ``N_BLOCKS`` equal consecutive blocks."""
    block = rows.shape[1] // N_BLOCKS
    blocks = (rows[:, :block * N_BLOCKS] ** 2).reshape(len(rows), N_BLOCKS, block).sum(axis=2)
    share = blocks / ((rows ** 2).sum(axis=1, keepdims=True) + EPS)
    return -(share * np.log2(share + EPS)).sum(axis=1)


def _centroid_spread(magnitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spectral centroid and spread as fractions of the Nyquist frequency."""
    nyquist = SAMPLE_RATE / 2
    freqs = np.linspace(0.0, nyquist, magnitude.shape[1])
    weights = magnitude / np.maximum(magnitude.max(axis=1, keepdims=True), EPS)
    total = weights.sum(axis=1) + EPS
    centroid = (weights * freqs).sum(axis=1) / total
    spread = np.sqrt((weights * (freqs - centroid[:, None]) ** 2).sum(axis=1) / total)
    return centroid / nyquist, spread / nyquist


def _flux(magnitude: np.ndarray) -> np.ndarray:
    """Squared change of the sum-normalised spectrum from the previous frame (0 for the first)."""
    shape = magnitude / (magnitude.sum(axis=1, keepdims=True) + EPS)
    return np.append(0.0, ((shape[1:] - shape[:-1]) ** 2).sum(axis=1))


def _rolloff(magnitude: np.ndarray) -> np.ndarray:
    """Fraction of the spectrum below which ``ROLLOFF`` of the energy lies."""
    cumulative = np.cumsum(magnitude ** 2, axis=1) + EPS
    above = cumulative > ROLLOFF * cumulative[:, -1:]
    return above.argmax(axis=1) / magnitude.shape[1]


def _cepstra(magnitude: np.ndarray) -> np.ndarray:
    """13 MFCCs of a magnitude spectrum: log10 mel energies, orthonormal DCT-II (pyAudioAnalysis' recipe)."""
    nfft = 2 * (magnitude.shape[1] - 1)
    energies = magnitude @ mel_filterbank(N_MEL, 133.33, SAMPLE_RATE / 2, nfft).T
    return np.log10(energies + EPS) @ dct_matrix(N_MEL, N_MFCC)


def _window_stats(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``values[lo[k]:hi[k]]`` for every ``k``, by cumulative sums (linear in the video)."""
    offset = values.mean(axis=0)
    centred = values - offset
    sums, squares = (np.pad(np.cumsum(x, axis=0), ((1, 0), (0, 0))) for x in (centred, centred ** 2))
    count = (hi - lo)[:, None]
    mean = (sums[hi] - sums[lo]) / count
    variance = np.maximum((squares[hi] - squares[lo]) / count - mean ** 2, 0.0)
    return mean + offset, np.sqrt(variance)
