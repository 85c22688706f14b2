"""Ear-SR's input image: the log-magnitude spectrogram of a 4 s clip, scaled to [-1, 1]. The one definition."""
from __future__ import annotations

import numpy as np

from avprep.features.timebase import SAMPLE_RATE, TimedFeature, fit_length

CLIP_SAMPLES = 64000  # 4 s
WINDOW = 512
STRIDE = 248  # (64000 - 512) / 248 + 1 = 257 frames, no padding needed
LOG_FLOOR = 1e-6


def earsr_spectrogram(audio_4s: np.ndarray) -> TimedFeature:
    """``(257 frequency bins, 257 frames)`` float32 in [-1, 1]; time runs along axis 1.

    The clip should be exactly 64,000 samples (4 s at 16 kHz); a shorter one is zero-padded at the end and a
    longer one cropped to its first 4 s, so a clip cut at the end of a video still gives a full image. STFT
    without centring: periodic Hann window of 512, stride 248, so frame ``j`` is centred at
    ``(256 + 248 j) / 16000`` s from the clip's first sample and bin ``b`` is at ``b * 31.25`` Hz. Then
    ``log(|X| + 1e-6)`` and a per-clip min-max to [-1, 1] (all zeros for a constant image, e.g. silence).
    """
    clip = fit_length(audio_4s, CLIP_SAMPLES).astype(np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)
    frames = np.lib.stride_tricks.sliding_window_view(clip, WINDOW)[::STRIDE]
    log_magnitude = np.log(np.abs(np.fft.rfft(frames * window, axis=1)).T + LOG_FLOOR)
    low, span = log_magnitude.min(), np.ptp(log_magnitude)
    scaled = 2.0 * (log_magnitude - low) / span - 1.0 if span > 0 else np.zeros_like(log_magnitude)
    return TimedFeature(scaled.astype(np.float32), SAMPLE_RATE / STRIDE, WINDOW / 2 / SAMPLE_RATE,
                        WINDOW / SAMPLE_RATE, STRIDE / SAMPLE_RATE, time_axis=1)
