"""Talking-head test videos: a real face photo whose mouth opens with generated speech.

Every clip comes with its ground truth (mouth opening, head pose, landmarks, audio offset), so tests
and benchmarks can check face tracking, lip-reading crops and audio-visual sync against known values.
"""
from __future__ import annotations

import json
import math
import os
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from scipy import signal

from avprep.media.encode import write_video
from avprep.synth.faces import LANDMARK_NAMES, Face, load_face
from avprep.synth.speech import synth_speech

# Speech is made at one rate and resampled, so a seed gives the same speech at every output rate.
_SPEECH_RATE = 16000
# Each identity's voice, (pitch in Hz, formant scale): pitches 12 % or more apart (a syllable's own pitch target
# varies by 8 %), vocal tracts 4 % apart, so that a second of speech says who speaks, as a real voice does.
VOICES = {"hanks": (100.0, 0.88), "ross": (113.0, 0.92), "chandler": (127.0, 0.96), "astronaut": (165.0, 1.08),
          "monica": (186.0, 1.12), "rachel": (210.0, 1.16), "phoebe": (236.0, 1.20)}
# Where the face sits in the frame, as fractions of the frame height.
_EYE_LEVEL = 0.42
_INTER_OCULAR = 0.17
# Head motion amplitudes at head_motion=1.
_MAX_ROTATION_DEG = 6.0
_MAX_SCALE = 0.06
_MAX_SHIFT = 0.03
# Mouth shape, in half mouth widths: the widest gap, and where the jaw drop fades out below the lips.
_MAX_GAP = 0.4
_FALL_START, _FALL_END = 1.6, 3.2
# Colours inside the open mouth, and the height of the upper-teeth band drawn when the photo's lips are closed.
_MOUTH_INTERIOR = np.array([60, 25, 30], dtype=np.float32)
_TEETH = np.array([205, 195, 180], dtype=np.float32)
_TEETH_HEIGHT = 0.15
_CLOSED_LIPS = 0.1  # inner-lip distance, in half mouth widths, below which the photo shows no teeth


def make_talking_head(
    path: str | os.PathLike,
    *,
    identity: str = "astronaut",
    seconds: float = 4.0,
    fps: float | str = 25,
    size: tuple[int, int] = (640, 360),
    sample_rate: int = 16000,
    channels: int = 1,
    av_offset_frames: int = 0,
    seed: int = 0,
    head_motion: float = 1.0,
    mouth_motion: float = 1.0,
    crf: int = 18,
) -> dict:
    """Write an H.264/AAC MP4 of ``identity`` speaking, and its ground truth as ``<path stem>.truth.json``.

    ``fps`` may be a number or a ratio string such as ``"30000/1001"``; ``size`` is (width, height)
    and must be even. A positive ``av_offset_frames`` makes the audio lag the video by that many
    frames. ``mouth_opening[i]`` in the ground truth is the speech loudness at frame i's timestamp.
    Returns the ground truth dict that is also written to the JSON file.
    """
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"frame size must be even for yuv420p, got {width}x{height}")
    rate = Fraction(str(fps))
    n_frames = int(round(seconds * rate))
    if n_frames < 1:
        raise ValueError(f"{seconds} s at {fps} fps gives no frame")
    duration = n_frames / rate

    face = load_face(identity)
    f0_hz, formant_scale = VOICES[identity]
    speech, envelope = synth_speech(float(duration), _SPEECH_RATE, seed, f0_hz=f0_hz, formant_scale=formant_scale)
    frame_samples = np.minimum((np.arange(n_frames) / rate * _SPEECH_RATE).astype(int), len(envelope) - 1)
    opening = np.clip(envelope[frame_samples] * mouth_motion, 0, 1)
    transforms = _head_transforms(face, n_frames, float(rate), size, head_motion, np.random.default_rng([seed, 1]))
    mouth = MouthWarp(face)

    speech = _resample(speech, _SPEECH_RATE, sample_rate, n_samples=int(round(duration * sample_rate)))
    shift = int(round(av_offset_frames * sample_rate / rate))
    audio = _channels(_shift(speech, shift), channels)
    frames = (_render(face, mouth, a, m, size) for a, m in zip(opening, transforms))
    write_video(Path(path), frames, audio, sample_rate, size, rate, crf)

    landmarks = [_apply(m, mouth.move_landmarks(face.landmarks, a)) for a, m in zip(opening, transforms)]
    truth = {
        "video": Path(path).name,
        "identity": identity,
        "fps": float(rate),
        "fps_str": str(fps),
        "n_frames": n_frames,
        "size": [width, height],
        "sample_rate": sample_rate,
        "channels": channels,
        "seconds": float(duration),
        "av_offset_frames": av_offset_frames,
        "seed": seed,
        "voice": {"f0_hz": f0_hz, "formant_scale": formant_scale},
        "mouth_opening": _rounded(opening),
        "head_transform": _rounded(transforms),
        "landmark_names": list(LANDMARK_NAMES),
        "landmarks": _rounded(np.array(landmarks)),
    }
    Path(path).with_suffix(".truth.json").write_text(json.dumps(truth), encoding="utf-8")
    return truth


def _head_transforms(face: Face, n: int, fps: float, size, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Per-frame 2x3 similarity transforms from crop pixels to frame pixels, with smooth head motion.

    The rest pose levels the eyes, scales the inter-ocular distance to 0.17 H and puts the eye
    midpoint at (W/2, 0.42 H); rotation, scale and shift wander around it.
    """
    width, height = size
    t = np.arange(n) / fps
    rotation, scale, shift_x, shift_y = amount * _wander(t, 4, rng)
    dx, dy = face.landmarks[1] - face.landmarks[0]
    angles = np.deg2rad(_MAX_ROTATION_DEG * rotation) - np.arctan2(dy, dx)
    scales = _INTER_OCULAR * height / face.inter_ocular * (1 + _MAX_SCALE * scale)
    targets = np.stack([width / 2 + _MAX_SHIFT * height * shift_x, (_EYE_LEVEL + _MAX_SHIFT * shift_y) * height], 1)
    return np.array([_similarity(a, s, face.eye_mid, d) for a, s, d in zip(angles, scales, targets)])


def _wander(t: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` smooth random signals in [-1, 1]: each a weighted sum of three slow sinusoids."""
    freqs = rng.uniform(0.15, 0.8, (count, 3, 1))
    phases = rng.uniform(0, 2 * np.pi, (count, 3, 1))
    weights = rng.dirichlet(np.ones(3), count)[:, :, None]
    return np.sum(weights * np.sin(2 * np.pi * freqs * t + phases), axis=1)


def _similarity(angle: float, scale: float, src, dst) -> np.ndarray:
    """2x3 matrix rotating by ``angle`` (radians) and scaling about ``src``, then moving ``src`` to ``dst``."""
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return np.hstack([rot, (np.asarray(dst) - rot @ src)[:, None]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


class MouthWarp:
    """Opens the mouth of a face crop: the lower lip and jaw drop and the gap between the lips is dark.

    Works in mouth coordinates: origin at the lip midpoint, u along mouth-left -> mouth-right, v
    perpendicular towards the chin, both in half mouth widths (hw). The lips meet along a parabola
    through the two corners and the origin (a smile curves up), and w = v - lip_line(u) is the
    height below it. For an opening a in [0, 1] the gap 0 < w < h(u) = a * max_gap * g(u) is dark,
    where g is 1 midway between the corners and 0 at them; below it, pixels come from
    w - h(u) * fall(w), where fall eases from 1 to 0 between w = 1.6 and 3.2 so the chin follows the
    jaw without folding. Only a box around the mouth is remapped, which keeps each frame cheap.

    The sizes were tuned until MediaPipe's face mesh reads the opening back (Pearson r > 0.85 for
    every identity): a gap much larger than 0.4 hw reads as dark lips on some faces.
    """

    def __init__(self, face: Face):
        left, right, upper, lower = face.landmarks[2:]
        self.origin = (upper + lower) / 2
        self.half_width = float(np.linalg.norm(right - left) / 2)
        self.e1 = (right - left) / (2 * self.half_width)
        self.e2 = np.array([-self.e1[1], self.e1[0]])
        # A mouth the photo already shows open must open further to look open: add the lips' distance.
        self.lips_apart = float(np.linalg.norm(lower - upper)) / self.half_width
        self.max_gap = _MAX_GAP + self.lips_apart
        self.corners = np.stack(self._mouth_coords(np.stack([left, right])), axis=1)  # rows (u, v)
        (u_left, v_left), (u_right, v_right) = self.corners
        self.curve = np.linalg.solve([[u_left, u_left**2], [u_right, u_right**2]], [v_left, v_right])
        self.box = self._box(face.image.shape)
        x0, y0, x1, y1 = self.box
        xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        self.base = np.stack([xs, ys])
        u, v = self._mouth_coords(self.base.transpose(1, 2, 0))
        self.gap = self._gap(u)
        self.below = v - self._lip_line(u)
        # Where each box pixel samples from, per unit of opening, in crop pixels (2, h, w).
        self.pull = -self._displacement(self.gap, self.below) * self.half_width * self.e2[:, None, None]
        # A photo with closed lips shows no teeth, so the gap gets upper teeth; otherwise they are already there.
        closed = self.lips_apart < _CLOSED_LIPS
        self.teeth = (_TEETH_HEIGHT / self.max_gap) * self.gap if closed else np.zeros_like(self.gap)
        self.colours = _in_palette_of(face.image, np.stack([_MOUTH_INTERIOR, _TEETH]))

    def _box(self, shape) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1) covering every pixel the warp can change, clipped to the image."""
        u_left, u_right = self.corners[:, 0]
        top = min(0.0, *self.corners[:, 1]) - 0.2
        corners = np.array([(u, v) for u in (u_left - 0.2, u_right + 0.2) for v in (top, _FALL_END + 0.2)])
        points = self.origin + corners * self.half_width @ np.stack([self.e1, self.e2])
        (x0, y0), (x1, y1) = np.floor(points.min(0)), np.ceil(points.max(0)) + 1
        height, width = shape[:2]
        return int(max(x0, 0)), int(max(y0, 0)), int(min(x1, width)), int(min(y1, height))

    def _mouth_coords(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = (points - self.origin) / self.half_width
        return d @ self.e1, d @ self.e2

    def _lip_line(self, u: np.ndarray) -> np.ndarray:
        return self.curve[0] * u + self.curve[1] * u**2

    def _gap(self, u: np.ndarray) -> np.ndarray:
        """Gap height at full opening, in hw: max_gap midway between the corners, 0 at and beyond them."""
        u_left, u_right = self.corners[:, 0]
        return self.max_gap * np.maximum(0.0, (u - u_left) * (u_right - u)) * 4 / (u_right - u_left) ** 2

    @staticmethod
    def _displacement(gap: np.ndarray, below: np.ndarray) -> np.ndarray:
        """Shift towards the chin, per unit of opening, of what shows ``below`` the lip line, in hw."""
        return np.where(below > 0, gap * _ease_out(below, _FALL_START, _FALL_END), 0.0)

    def open(self, image: np.ndarray, opening: float) -> np.ndarray:
        """The crop ``image`` with the mouth open by ``opening`` in [0, 1] (``image`` itself when closed)."""
        if opening <= 0:
            return image
        x0, y0, x1, y1 = self.box
        maps = (self.base + opening * self.pull).astype(np.float32)
        warped = cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # How much of each pixel (a unit box around it) the gap and the teeth cover: anti-aliased edges.
        below, gap = self.below * self.half_width, opening * self.gap * self.half_width
        alpha = np.clip(np.minimum(below + 0.5, gap) - np.maximum(below - 0.5, 0), 0, 1)[..., None]
        teeth = np.clip(np.minimum(self.teeth * self.half_width, gap) - below + 0.5, 0, 1)[..., None]
        interior = self.colours[0] * (1 - teeth) + self.colours[1] * teeth
        out = image.copy()
        out[y0:y1, x0:x1] = (warped * (1 - alpha) + interior * alpha).astype(np.uint8)
        return out

    def move_landmarks(self, landmarks: np.ndarray, opening: float) -> np.ndarray:
        """Where landmarks end up after the warp; exact near the lips, where the jaw drop is not fading yet."""
        u, v = self._mouth_coords(landmarks)
        shift = opening * self._displacement(self._gap(u), v - self._lip_line(u)) * self.half_width
        return landmarks + shift[:, None] * self.e2


def _in_palette_of(image: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """``colours`` as they would appear in ``image``: grey if the photo is black and white."""
    if np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]):
        return np.repeat(colours @ np.array([0.299, 0.587, 0.114], dtype=np.float32), 3).reshape(colours.shape)
    return colours


def _ease_out(x: np.ndarray, start: float, end: float) -> np.ndarray:
    """1 up to ``start``, 0 from ``end``, smoothstep in between."""
    t = np.clip((x - start) / (end - start), 0, 1)
    return 1 - t * t * (3 - 2 * t)


def _render(face: Face, mouth: MouthWarp, opening: float, transform: np.ndarray, size) -> np.ndarray:
    """One RGB frame: mouth warp on the crop, then a single resampling into the frame."""
    crop = mouth.open(face.image, opening)
    return cv2.warpAffine(crop, transform, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _resample(audio: np.ndarray, rate_in: int, rate_out: int, n_samples: int) -> np.ndarray:
    """``audio`` at ``rate_out`` (polyphase, anti-aliased), cut or zero-padded to exactly ``n_samples``."""
    common = math.gcd(rate_in, rate_out)
    resampled = signal.resample_poly(audio, rate_out // common, rate_in // common).astype(np.float32)
    return np.pad(resampled[:n_samples], (0, max(0, n_samples - len(resampled))))


def _shift(audio: np.ndarray, samples: int) -> np.ndarray:
    """``audio`` delayed by ``samples`` (advanced when negative), keeping its length."""
    out = np.zeros_like(audio)
    n = len(audio)
    if samples >= 0:
        out[samples:] = audio[: max(n - samples, 0)]
    else:
        out[: max(n + samples, 0)] = audio[-samples:]
    return out


def _channels(mono: np.ndarray, channels: int) -> np.ndarray:
    """(samples, channels) array; channels get slightly different gains so they are not identical."""
    gains = 1.0 - 0.1 * np.arange(channels)
    return mono[:, None] * gains[None, :].astype(np.float32)


def _rounded(values: np.ndarray, digits: int = 3) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()
