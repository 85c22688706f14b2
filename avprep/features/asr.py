"""Character features per video frame for HeadGAN: posteriors from a pluggable ASR acoustic model (ONNX, run on
CPU), or words recognised by pocketsphinx's bundled English model and spelt across their times.

pocketsphinx (``avprep extract --asr pocketsphinx``): the wheel ships a real English acoustic model, dictionary
and language model; ``Decoder.seg()`` gives each recognised word with its first and last 10 ms frame. Fillers
(``<s>``, ``<sil>``, ``[NOISE]``, ...) are left out and alternative pronunciations (``word(2)``) read as the word;
``transcript_onehot`` then spreads each word's letters evenly over its span, as for a timed transcript.

I/O contract. A model is one ``.onnx`` file with one input and one output:

- input ``waveform``: float32 ``[1, samples]``, 16 kHz mono on the video's clock, zero-padded or cropped to
  the video's duration ``n_frames / fps``; or
- input ``mfcc``: float32 ``[1, T, 12]``, ``atvgnet_mfcc`` (python_speech_features conventions) at 100 Hz,
  ``T = round(n_frames / fps * 100)``;
- output: float32 logits ``[1, steps, classes]``; step ``i`` is centred at ``offset_s + i * step_s`` seconds.

An optional sidecar ``<model>.json`` next to the ``.onnx`` declares what the graph cannot::

    {"input": "waveform", "step_s": 0.02, "offset_s": 0.01, "alphabet": [" ", "a", "b", ..., "z"]}

Every key is optional: ``input`` defaults to the model's input name (which must then be ``waveform`` or
``mfcc``), ``step_s`` to the input's duration / ``steps`` (outputs tiling the input evenly), ``offset_s`` to
``step_s / 2``, ``alphabet`` to ``DEFAULT_ALPHABET``. ``classes`` must equal the alphabet's length. Class 0 of
an alphabet is the space / blank class, the one silence maps to.

Resampling to video frames: softmax probabilities are linearly interpolated at ``k / fps`` (held at the
first / last step beyond the ends) and returned as natural-log probabilities, so a frame between two steps
gets their mixture and every row is still a valid set of logits.
"""
from __future__ import annotations

import functools
import json
import re
import string
from pathlib import Path

import numpy as np
import onnxruntime

from avprep.features.mfcc import RATE_HZ as MFCC_RATE_HZ
from avprep.features.mfcc import atvgnet_mfcc
from avprep.features.timebase import (
    TimedFeature,
    fit_length,
    rows_for_video,
)
from avprep.media.audio import SAMPLE_RATE

DEFAULT_ALPHABET = (" ", *string.ascii_lowercase)  # 27 classes: space/blank, a-z
INPUT_RATES_HZ = {"waveform": float(SAMPLE_RATE), "mfcc": MFCC_RATE_HZ}


def asr_logits(model_path: str | Path, audio: np.ndarray, fps: float, n_frames: int) -> TimedFeature:
    """``(n_frames, classes)`` log-probabilities, row ``k`` at ``k / fps`` (see the module docstring)."""
    session, meta = _load(Path(model_path))
    kind = meta.get("input", session.get_inputs()[0].name)
    if kind not in INPUT_RATES_HZ:
        raise ValueError(f"{model_path}: input kind must be one of {sorted(INPUT_RATES_HZ)} (the model's input "
                         f"name or 'input' in its .json sidecar), not {kind!r}")
    inputs = _model_input(kind, audio, fps, n_frames)
    logits = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    alphabet = meta.get("alphabet", DEFAULT_ALPHABET)
    if logits.ndim != 3 or logits.shape[0] != 1 or logits.shape[2] != len(alphabet):
        raise ValueError(f"{model_path}: output shape {logits.shape}, expected [1, steps, {len(alphabet)}]")
    step_s = meta.get("step_s", inputs.shape[1] / INPUT_RATES_HZ[kind] / logits.shape[1])
    positions = (np.arange(n_frames) / fps - meta.get("offset_s", step_s / 2)) / step_s
    probabilities = _interpolate(_softmax(logits[0].astype(np.float64)), positions)
    log_probabilities = np.log(np.maximum(probabilities, np.finfo(np.float64).tiny))
    return TimedFeature(log_probabilities.astype(np.float32), fps, 0.0, step_s, 1.0 / fps)


def pocketsphinx_words(audio: np.ndarray) -> list[tuple[float, float, str]]:
    """``(start_s, end_s, word)`` of the words pocketsphinx's English model hears in 16 kHz mono ``audio``."""
    decoder = _pocketsphinx_decoder()
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    words = []
    for segment in decoder.seg():
        if segment.word.startswith(("<", "[")):
            continue
        words.append((segment.start_frame / 100, (segment.end_frame + 1) / 100, re.sub(r"\(\d+\)$", "", segment.word)))
    return words


@functools.lru_cache(maxsize=1)
def _pocketsphinx_decoder():
    """One decoder per process: loading the model takes about a second."""
    from pocketsphinx import Decoder

    return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")


def headgan_asr_window(per_frame: TimedFeature, window: int = 8) -> TimedFeature:
    """Each frame's row with its neighbours ``k - (window/2 - 1) .. k + window/2`` (edge-padded), flattened.

    HeadGAN: 8 frames (k-3..k+4) x 27 classes = 216 columns per video frame.
    """
    n_rows = len(per_frame.values)
    neighbours = np.arange(n_rows)[:, None] + np.arange(window) - (window // 2 - 1)
    stacked = per_frame.values[np.clip(neighbours, 0, n_rows - 1)].reshape(n_rows, -1)
    window_s = per_frame.window_s + (window - 1) / per_frame.rate_hz
    return TimedFeature(stacked, per_frame.rate_hz, per_frame.start_s, window_s, per_frame.hop_s)


def transcript_onehot(words_with_times, alphabet, fps: float, n_frames: int) -> TimedFeature:
    """``(n_frames, len(alphabet))`` one-hot characters from a timed transcript (HeadGAN's own variant).

    ``words_with_times`` holds ``(start_s, end_s, text)``: a word, a phrase or a single character. Its
    characters (lower-cased; ones outside the alphabet dropped) share ``[start_s, end_s)`` evenly, and a
    frame at ``k / fps`` takes the character whose share it falls in; frames outside every span are silent,
    class 0 (``alphabet[0]``, the space / blank class).
    """
    index = {char: i for i, char in enumerate(alphabet)}
    classes = np.zeros(n_frames, dtype=np.int64)
    times = np.arange(n_frames) / fps
    for start_s, end_s, text in words_with_times:
        chars = np.array([index[char] for char in text.lower() if char in index], dtype=np.int64)
        inside = (times >= start_s) & (times < end_s)
        if chars.size and inside.any():
            share = ((times[inside] - start_s) / (end_s - start_s) * chars.size).astype(np.int64)
            classes[inside] = chars[np.minimum(share, chars.size - 1)]
    return TimedFeature(np.eye(len(alphabet), dtype=np.float32)[classes], fps, 0.0, 1.0 / fps, 1.0 / fps)


def _load(model_path: Path) -> tuple[onnxruntime.InferenceSession, dict]:
    """The model's session (cached while the file is unchanged) and its sidecar's keys (``{}`` without one)."""
    if not model_path.is_file():
        raise FileNotFoundError(f"ASR model not found: {model_path}")
    sidecar = model_path.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    return _session(str(model_path.resolve()), model_path.stat().st_mtime_ns), meta


@functools.lru_cache(maxsize=4)
def _session(path: str, mtime_ns: int) -> onnxruntime.InferenceSession:
    """Built once per model file version: loading a real acoustic model takes longer than running it."""
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def _model_input(kind: str, audio: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """The batch of one the contract promises for ``kind``, spanning the video's duration."""
    if kind == "mfcc":
        return atvgnet_mfcc(audio, fps, n_frames).values[None]
    return fit_length(audio, rows_for_video(SAMPLE_RATE, fps, n_frames)).astype(np.float32)[None]


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _interpolate(rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Rows at fractional ``positions``, linear between neighbours and held beyond the ends."""
    positions = np.clip(positions, 0, len(rows) - 1)
    below = np.floor(positions).astype(np.int64)
    above = np.minimum(below + 1, len(rows) - 1)
    weight = (positions - below)[:, None]
    return (1.0 - weight) * rows[below] + weight * rows[above]
