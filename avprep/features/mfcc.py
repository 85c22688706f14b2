"""MFCCs at 100 Hz as SyncNet, DAVS and ATVGnet compute them, written out so every step is visible.

Mel scale: HTK, ``mel = 2595 log10(1 + f / 700)``. Filters are triangles on FFT bins placed as
python_speech_features places them (``floor((nfft + 1) * f / sr)``); librosa's Slaney scale differs slightly.
Row ``j`` is the 25 ms window centred at ``j * 10`` ms; a video of ``n_frames`` at ``fps`` gets exactly
``round(n_frames / fps * 100)`` rows (audio zero-padded at the end as needed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avprep.features.timebase import TimedFeature, centred_frames, rows_for_video
from avprep.media.audio import SAMPLE_RATE

RATE_HZ = 100.0
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
NFFT = 512
PRE_EMPHASIS = 0.97
N_COEFFS = 13  # before dropping c0
LIFTER = 22


@dataclass(frozen=True)
class MfccVariant:
    """What differs between the MFCC variants."""

    window: np.ndarray
    n_filters: int
    fmin_hz: float
    fmax_hz: float
    magnitude: bool = False  # filterbank on |X| (the MATLAB mfcc.m DAVS ran) instead of |X|^2 / NFFT


def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_filters: int, fmin_hz: float, fmax_hz: float, nfft: int,
                   sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``(n_filters, nfft // 2 + 1)`` triangles, peak 1, edges on whole FFT bins (python_speech_features)."""
    mels = np.linspace(hz_to_mel(fmin_hz), hz_to_mel(fmax_hz), n_filters + 2)
    edges = np.floor((nfft + 1) * mel_to_hz(mels) / sample_rate)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bins = np.arange(nfft // 2 + 1)
    rising = (bins - left) / (centre - left)
    falling = (right - bins) / (right - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II as an ``(n_in, n_out)`` matrix: ``coeffs = x @ dct_matrix(...)``."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    scale = np.where(k == 0, np.sqrt(1.0 / n_in), np.sqrt(2.0 / n_in))
    return scale * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))


def lifter(n_coeffs: int, length: int = LIFTER) -> np.ndarray:
    """python_speech_features' sinusoidal lifter ``1 + (L / 2) sin(pi n / L)``: lifts the higher cepstra."""
    return 1.0 + (length / 2.0) * np.sin(np.pi * np.arange(n_coeffs) / length)


def pre_emphasis(audio: np.ndarray, coeff: float = PRE_EMPHASIS) -> np.ndarray:
    """``y[n] = x[n] - coeff * x[n - 1]`` (``y[0] = x[0]``): tilts speech towards the informative highs."""
    audio = np.asarray(audio, dtype=np.float64)
    return np.append(audio[:1], audio[1:] - coeff * audio[:-1])


def _mfcc(audio: np.ndarray, fps: float, n_frames: int, spec: MfccVariant) -> TimedFeature:
    """Pre-emphasis, framing, window, power spectrum / NFFT (or magnitude), mel log energies, DCT, lifter, drop
    c0."""
    frames = centred_frames(pre_emphasis(audio), rows_for_video(RATE_HZ, fps, n_frames), WINDOW, HOP)
    spectrum = np.abs(np.fft.rfft(frames * spec.window, NFFT))
    if not spec.magnitude:
        spectrum = spectrum**2 / NFFT
    energies = spectrum @ mel_filterbank(spec.n_filters, spec.fmin_hz, spec.fmax_hz, NFFT).T
    log_energies = np.log(np.maximum(energies, np.finfo(np.float64).eps))
    cepstra = log_energies @ dct_matrix(spec.n_filters, N_COEFFS) * lifter(N_COEFFS)
    return TimedFeature(cepstra[:, 1:].astype(np.float32), RATE_HZ, 0.0, WINDOW / SAMPLE_RATE, HOP / SAMPLE_RATE)


SYNCNET = MfccVariant(window=np.hamming(WINDOW), n_filters=13, fmin_hz=300.0, fmax_hz=3700.0)
DAVS = MfccVariant(window=np.hamming(WINDOW), n_filters=13, fmin_hz=300.0, fmax_hz=3700.0, magnitude=True)
ATVGNET = MfccVariant(window=np.ones(WINDOW), n_filters=26, fmin_hz=0.0, fmax_hz=SAMPLE_RATE / 2)


def syncnet_mfcc(audio: np.ndarray, fps: float, n_frames: int) -> TimedFeature:
    """SyncNet/DAVS MFCC: symmetric Hamming window, 13 filters over 300-3700 Hz -> ``(rows, 12)`` at 100 Hz."""
    return _mfcc(audio, fps, n_frames, SYNCNET)


def davs_mfcc(audio: np.ndarray, fps: float, n_frames: int) -> TimedFeature:
    """DAVS's preprocessing (``preprocess/mfcc.m``): SyncNet's settings on the magnitude spectrum -> ``(rows, 12)``."""
    return _mfcc(audio, fps, n_frames, DAVS)


def atvgnet_mfcc(audio: np.ndarray, fps: float, n_frames: int) -> TimedFeature:
    """ATVGnet (python_speech_features defaults): rectangular window, 26 filters over 0-8000 Hz -> ``(rows, 12)``."""
    return _mfcc(audio, fps, n_frames, ATVGNET)


# A recipe's ``mfcc``: extract stores the STORED ones (``mfcc_<kind>.npy``); shard computes the others from the
# stored audio of the videos whose audio extract analysed.
MFCC_KINDS = {"syncnet": syncnet_mfcc, "davs": davs_mfcc, "atvgnet": atvgnet_mfcc}
STORED = ("syncnet", "atvgnet")
