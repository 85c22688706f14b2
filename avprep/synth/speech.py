"""Speech-like audio with a known syllable loudness envelope.

Real speech cannot ship with the tests, and a sine or noise track does not behave like speech for
voice-activity detection or audio-visual sync models. This source-filter synthesiser yields a
voice-like signal whose loudness envelope is known exactly, so the mouth of a synthetic face can
follow it and sync can be checked against ground truth.
"""
from __future__ import annotations

import numpy as np
from scipy import signal

# Textbook formant frequencies (Hz) of the vowels a, e, i, o, u, and the bandwidths used for all.
_VOWEL_FORMANTS = np.array([
    (730, 1090, 2440),  # a
    (530, 1840, 2480),  # e
    (270, 2290, 3010),  # i
    (570, 840, 2410),  # o
    (300, 870, 2240),  # u
])
_BANDWIDTHS = (80, 100, 120)

_PEAK = 10 ** (-3 / 20)  # -3 dBFS
_CONSONANT_SHARE = 0.5  # fraction of syllables that start with a noise burst


def synth_speech(seconds: float, sample_rate: int = 16000, seed: int = 0, f0_hz: float = 150.0,
                 formant_scale: float = 1.0):
    """Return ``(waveform, envelope)``: float32 mono speech in [-1, 1] and its syllable loudness in [0, 1].

    A voice is its pitch ``f0_hz`` and its vocal tract: ``formant_scale`` multiplies every formant (a shorter
    tract, higher formants: about 0.9 for a man's voice, 1.15 for a woman's, against the textbook averages).

    Both arrays hold one value per audio sample, so the loudness at time t is
    ``envelope[int(t * sample_rate)]``. The same arguments always give the same audio.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    starts, ends = _syllable_times(seconds, rng)
    owner = _syllable_owner(t, starts, ends)
    envelope = _syllable_envelope(t, owner, starts, ends, loudness=rng.uniform(0.6, 1.0, len(starts)))
    f0 = _pitch_contour(t, seconds, starts, ends, f0_hz, rng)
    source = _glottal_source(f0, sample_rate)
    vowel_of = rng.integers(0, len(_VOWEL_FORMANTS), len(starts))
    voiced = _vowels(source, owner, vowel_of, sample_rate, formant_scale) * envelope
    onsets = starts[rng.random(len(starts)) < _CONSONANT_SHARE]
    speech = voiced + 0.3 * np.max(np.abs(voiced), initial=0) * _consonant_bursts(onsets, len(t), sample_rate, rng)
    peak = np.max(np.abs(speech), initial=0)
    if peak > 0:
        speech *= _PEAK / peak
    return speech.astype(np.float32), envelope.astype(np.float32)


def _syllable_times(seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Start and end times of syllables (0.12-0.30 s) in words of 2-4, words 0.15-0.5 s apart."""
    starts, ends = [], []
    t = rng.uniform(0.1, 0.3)
    while True:
        for _ in range(rng.integers(2, 5)):
            end = t + rng.uniform(0.12, 0.30)
            if end > seconds:
                return np.array(starts), np.array(ends)
            starts.append(t)
            ends.append(end)
            t = end
        t += rng.uniform(0.15, 0.5)


def _syllable_owner(t: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Index of the syllable sounding at each time, -1 in pauses."""
    owner = np.searchsorted(starts, t, side="right") - 1
    inside = owner >= 0
    inside[inside] = t[inside] < ends[owner[inside]]
    return np.where(inside, owner, -1)


def _syllable_envelope(t, owner, starts, ends, loudness) -> np.ndarray:
    """Raised-cosine attack over the first 35 % of each syllable and decay over the last 45 %."""
    envelope = np.zeros(len(t))
    inside = owner >= 0
    k = owner[inside]
    phase = (t[inside] - starts[k]) / (ends[k] - starts[k])
    ramp = np.minimum(np.clip(phase / 0.35, 0, 1), np.clip((1 - phase) / 0.45, 0, 1))
    envelope[inside] = loudness[k] * 0.5 * (1 - np.cos(np.pi * ramp))
    return envelope


def _pitch_contour(t, seconds: float, starts, ends, f0_hz: float, rng: np.random.Generator) -> np.ndarray:
    """f0 per sample: 10 % declination over the clip, a pitch target per syllable, and 1 % jitter."""
    declination = 1 - 0.1 * t / seconds
    centres = (starts + ends) / 2
    targets = np.interp(t, centres, 1 + 0.08 * rng.standard_normal(len(centres))) if len(centres) else 1.0
    jitter_grid = np.arange(0, seconds + 0.02, 0.01)
    jitter = np.interp(t, jitter_grid, 1 + 0.01 * rng.standard_normal(len(jitter_grid)))
    return f0_hz * declination * targets * jitter


def _glottal_source(f0: np.ndarray, sample_rate: int) -> np.ndarray:
    """Rosenberg glottal pulses from a phase accumulator, differentiated for lip radiation, low-passed."""
    phase = np.cumsum(f0 / sample_rate) % 1.0
    opening, closing = 0.4, 0.16
    flow = np.where(
        phase < opening,
        0.5 * (1 - np.cos(np.pi * phase / opening)),
        np.cos(0.5 * np.pi * np.clip((phase - opening) / closing, 0, 1)),
    )
    sos = signal.butter(2, min(4000.0, 0.45 * sample_rate), fs=sample_rate, output="sos")
    return signal.sosfilt(sos, np.diff(flow, prepend=0.0))


def _vowels(source: np.ndarray, owner: np.ndarray, vowel_of: np.ndarray, sample_rate: int,
            formant_scale: float) -> np.ndarray:
    """The source filtered once per vowel, each syllable taking the output of its own vowel."""
    out = np.zeros_like(source)
    vowel = np.full(len(owner), -1)
    vowel[owner >= 0] = vowel_of[owner[owner >= 0]]
    for v, formants in enumerate(_VOWEL_FORMANTS):
        mask = vowel == v
        if mask.any():
            filtered = signal.sosfilt(_formant_sos(formants * formant_scale, sample_rate), source)
            out[mask] = filtered[mask] / (np.sqrt(np.mean(filtered**2)) + 1e-12)
    return out


def _formant_sos(formants, sample_rate: int) -> np.ndarray:
    """Cascade of 2nd-order resonators with unit gain at DC (Klatt's formant resonator)."""
    sections = []
    for f, bw in zip(formants, _BANDWIDTHS):
        r = np.exp(-np.pi * bw / sample_rate)
        b1, b2 = 2 * r * np.cos(2 * np.pi * min(f, 0.45 * sample_rate) / sample_rate), -(r**2)
        sections.append([1 - b1 - b2, 0, 0, 1, -b1, -b2])
    return np.array(sections)


def _consonant_bursts(onsets: np.ndarray, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """High-passed noise bursts of 25-60 ms ending just after each onset, peak about 1."""
    gate = np.zeros(n)
    for onset, length in zip(onsets, rng.uniform(0.025, 0.06, len(onsets))):
        i0 = max(0, int((onset + 0.02 - length) * sample_rate))
        window = np.hanning(int(length * sample_rate))[: n - i0]
        gate[i0 : i0 + len(window)] = window
    sos = signal.butter(4, min(2500.0, 0.4 * sample_rate), btype="highpass", fs=sample_rate, output="sos")
    noise = signal.sosfilt(sos, rng.standard_normal(n))
    return gate * noise / 3.0
