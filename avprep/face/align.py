"""Similarity alignment of a face to a canonical template, and the canonical crop every recipe cuts from.

Canonical crop of side S: eyes level at y = 0.40 S, eye centres 0.20 S apart around x = 0.5 S. That leaves
room for every recipe's own crop as an affine sub-window: an FFHQ-style crop (about 4 inter-ocular distances,
centred a little below the eyes; HeadGAN), Ear-SR's VoxCeleb2 window (4, centred 1 below the eyes), DAVS's
eyes+mouth template (about 3.4), ATVGnet's (2.53) and Wav2Pix's box (2.86).
"""
from __future__ import annotations

import cmath
import math

import cv2
import numpy as np

from avprep.face.points import LEFT_EYE_CORNERS, LEFT_TEMPLE, NOSE_BRIDGE, RIGHT_EYE_CORNERS, RIGHT_TEMPLE

EYE_LINE_Y = 0.40
INTER_OCULAR = 0.20

# Template in inter-ocular units around the eye midpoint (x right, y down): the eye centres (midpoints of each
# eye's corners, which neither blinks nor gaze move), the nose bridge between the eyes and the two temples. Lips,
# jaw and nose tip are left out: in MediaPipe's mesh they move with speech, and so would the crop. The temples
# are there for scale: when the jaw drops the mesh draws the eyes slightly closer and the temples slightly
# apart, and together the two cancel (measured on generated talking heads: scale noise 0.70% -> 0.45% and its
# correlation with mouth opening 0.57 -> -0.09).
_TEMPLATE_IOD = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, -0.02], [-1.12, -0.11], [1.12, -0.11]])
_WEIGHTS = np.array([3.0, 3.0, 1.0, 1.0, 1.0]) / 9.0  # eyes count most; normalised to sum 1
_COMPLEX = np.array([1.0, 1.0j])  # (x, y) @ _COMPLEX = x + iy


# The template of a unit crop as x + iy, with the parts of the fit that depend on it alone
_UNIT_TEMPLATE = (_TEMPLATE_IOD * INTER_OCULAR + [0.5, EYE_LINE_Y]) @ _COMPLEX
_UNIT_MEAN = complex(_WEIGHTS @ _UNIT_TEMPLATE)
_UNIT_WEIGHTED = _WEIGHTS * (_UNIT_TEMPLATE - _UNIT_MEAN)

# alignment_points as one gather and one small product: the template rows as weights over the mesh points they use
_ALIGNMENT_SOURCES = np.array([*LEFT_EYE_CORNERS, *RIGHT_EYE_CORNERS, NOSE_BRIDGE, LEFT_TEMPLE, RIGHT_TEMPLE])
_ALIGNMENT_MEANS = np.array([[0.5, 0.5, 0, 0, 0, 0, 0], [0, 0, 0.5, 0.5, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0],
                             [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1]])


def alignment_points(points: np.ndarray) -> np.ndarray:
    """The mesh points matching the template rows, (..., 5, 2): eye centres (mean of each eye's corners), nose
    bridge, temples."""
    return _ALIGNMENT_MEANS @ points[..., _ALIGNMENT_SOURCES, :2]


def to_unit_crop(points: np.ndarray) -> tuple[complex, complex]:
    """The similarity (rotation, uniform scale, translation; no reflection) z -> c z + d, on points written
    x + iy, that best takes a face's (478, d) landmarks onto the template of a crop of side 1 (weighted least
    squares over the alignment points); a crop of side S is S c, S d.

    Umeyama's closed form, which in 2-D is c = sum(w conj(s) t) / sum(w |s|^2) over centred points; with the
    template fixed, its part of the sums is worked out once. It runs twice a frame: a handful of array operations.
    """
    s = alignment_points(points) @ _COMPLEX
    mean = complex(_WEIGHTS @ s)
    c = complex(np.vdot(s, _UNIT_WEIGHTED)) / (float(np.vdot(s, _WEIGHTS * s).real) - abs(mean) ** 2)
    return c, _UNIT_MEAN - c * mean


def crop_pose(points: np.ndarray, size: int) -> np.ndarray:
    """Where one frame's canonical crop sits in the frame: (centre x, centre y, log scale, angle).

    Smoothing these, rather than the matrix entries, lets the centre follow the head closely while scale and
    rotation, which real heads change slowly, are smoothed harder: no jitter and no zoom pumping.
    """
    c, d = to_unit_crop(points)
    centre = (complex(0.5, 0.5) - d) / c  # the crop's centre, mapped back into the frame
    return np.array([centre.real, centre.imag, math.log(size * abs(c)), cmath.phase(c)])


def transform_from_pose(pose: np.ndarray, size: int) -> np.ndarray:
    """The 2x3 frame -> crop affine of a (centre x, centre y, log scale, angle) crop pose."""
    scale, angle = np.exp(pose[2]), pose[3]
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([rotation, (np.array([size / 2, size / 2]) - rotation @ pose[:2])[:, None]])


def cut(frame: np.ndarray, transform: np.ndarray, size: int, border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """The canonical crop: ``frame`` warped by ``transform`` into a size x size image (black outside the frame,
    or ``border``: OpenCV's border mode).

    A face much larger than the crop is first halved with a Gaussian pyramid, so shrinking does not alias. Only
    the part of the frame under the crop is halved (the pixels are the same as halving the whole frame): at
    720p that is under half the frame.
    """
    transform = transform.astype(np.float64)
    halvings = 0
    while np.hypot(transform[0, 0], transform[0, 1]) * 2**halvings < 0.5:
        halvings += 1
    if halvings:
        frame, (x0, y0) = _under_crop(frame, transform, size, 2**halvings)
        transform[:, 2] += transform[:, :2] @ (x0, y0)
        for _ in range(halvings):
            frame = cv2.pyrDown(frame)
        transform[:, :2] *= 2**halvings
    return cv2.warpAffine(frame, transform, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def _under_crop(frame: np.ndarray, transform: np.ndarray, size: int, step: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The window of ``frame`` that a crop reads from after halving it to 1/``step``, and its corner. The corner
    sits on the halved grid, and the window reaches far enough past the crop that the pyramid's 5-tap filter
    never sees its edge where the frame goes on."""
    corners = apply(cv2.invertAffineTransform(transform), np.array([[0, 0], [size, 0], [0, size], [size, size]]))
    margin = 4 * step
    height, width = frame.shape[:2]
    x0, y0 = (np.clip(np.floor(corners.min(axis=0)) - margin, 0, None) // step * step).astype(int)
    x1, y1 = np.minimum(np.ceil(corners.max(axis=0)) + margin, (width, height)).astype(int)
    if x1 - x0 < step or y1 - y0 < step:  # the crop lies outside the frame: keep a little of it, all black later
        x0, y0, x1, y1 = 0, 0, step, step
    return frame[y0:y1, x0:x1], (int(x0), int(y0))


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (..., 2) points through a 2x3 affine."""
    return points @ transform[:, :2].T + transform[:, 2]


def gaussian_weights(sigma_frames: float) -> np.ndarray:
    """Symmetric smoothing kernel (unnormalised) over +-ceil(3 sigma) frames; a single 1 for sigma 0."""
    radius = int(np.ceil(3 * sigma_frames))
    if radius == 0:
        return np.ones(1)
    offsets = np.arange(-radius, radius + 1)
    return np.exp(-0.5 * (offsets / sigma_frames) ** 2)
