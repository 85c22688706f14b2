"""Ear-SR's input image: the log-power spectrogram of a 4 s clip, time x frequency, scaled to [-1, 1]. The one
definition, as the official ``utils.load_test_sample``: TF's ``audio_spectrogram(window_size=512, stride=248,
magnitude_squared=True)`` (periodic Hann, FFT of 512, no padding, |X|^2, laid out time x frequency), then
``log(x + 1e-6)``, then ``(x + |min|) / (max - min)`` per clip, then ``2x - 1``."""
from __future__ import annotations

import numpy as np

from avprep.features.timebase import TimedFeature, fit_length
from avprep.media.audio import SAMPLE_RATE

CLIP_SAMPLES = 64000  # 4 s
WINDOW = 512
STRIDE = 248  # (64000 - 512) / 248 + 1 = 257 frames, no padding needed
LOG_FLOOR = 1e-6


def earsr_spectrogram(audio_4s: np.ndarray) -> TimedFeature:
    """``(257 frames, 257 frequency bins)`` float32 in [-1, 1]; time runs along axis 0 (TF's layout).

    The clip should be exactly 64,000 samples (4 s at 16 kHz); a shorter one is zero-padded at the end and a
    longer one cropped to its first 4 s, so a clip cut at the end of a video still gives a full image. Frame ``j``
    is centred at ``(256 + 248 j) / 16000`` s from the clip's first sample and bin ``b`` is at ``b * 31.25`` Hz.
    The official scaling adds |min| where min-max scaling subtracts min: the same for every clip whose smallest
    log power is negative (always, unless every bin of every frame has power above 1); a constant image (silence)
    is all zeros here, where the official divides by zero.
    """
    clip = fit_length(audio_4s, CLIP_SAMPLES).astype(np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)
    frames = np.lib.stride_tricks.sliding_window_view(clip, WINDOW)[::STRIDE]
    log_power = np.log(np.abs(np.fft.rfft(frames * window, axis=1)) ** 2 + LOG_FLOOR)
    low, span = log_power.min(), np.ptp(log_power)
    scaled = 2.0 * (log_power + abs(low)) / span - 1.0 if span > 0 else np.zeros_like(log_power)
    return TimedFeature(scaled.astype(np.float32), SAMPLE_RATE / STRIDE, WINDOW / 2 / SAMPLE_RATE,
                        WINDOW / SAMPLE_RATE, STRIDE / SAMPLE_RATE, time_axis=0)
