"""Similarity alignment of a face to a canonical template, and the canonical crop every recipe cuts from.

Canonical crop of side S: eyes level at y = 0.40 S, eye centres 0.20 S apart around x = 0.5 S. That leaves
room for every recipe's own crop as an affine sub-window: an FFHQ-style crop (about 4 inter-ocular distances,
centred a little below the eyes; HeadGAN, Ear-SR), DAVS's eyes+mouth template (about 3.4), ATVGnet's (about
3) and Wav2Pix's tight box (about 2.2).
"""
from __future__ import annotations

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
_WEIGHTS = np.array([3.0, 3.0, 1.0, 1.0, 1.0])


def template(size: int) -> np.ndarray:
    """Template points in canonical-crop pixels for a crop of side ``size``."""
    return (_TEMPLATE_IOD * INTER_OCULAR + [0.5, EYE_LINE_Y]) * size


# alignment_points as one gather and one small product: the template rows as weights over the mesh points they use
_ALIGNMENT_SOURCES = np.array([*LEFT_EYE_CORNERS, *RIGHT_EYE_CORNERS, NOSE_BRIDGE, LEFT_TEMPLE, RIGHT_TEMPLE])
_ALIGNMENT_MEANS = np.array([[0.5, 0.5, 0, 0, 0, 0, 0], [0, 0, 0.5, 0.5, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0],
                             [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1]])


def alignment_points(points: np.ndarray) -> np.ndarray:
    """The mesh points matching the template rows, (..., 5, 2): eye centres (mean of each eye's corners), nose
    bridge, temples."""
    return _ALIGNMENT_MEANS @ points[..., _ALIGNMENT_SOURCES, :2]


def fit_similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray = _WEIGHTS) -> np.ndarray:
    """Weighted least-squares similarity (rotation, uniform scale, translation; no reflection) mapping
    ``source`` (n, 2) onto ``target`` (n, 2), as a 2x3 matrix (Umeyama's closed form)."""
    w = weights / weights.sum()
    mu_s, mu_t = w @ source, w @ target
    s, t = source - mu_s, target - mu_t
    # For 2-D similarity the optimum has a = sum(w (s.t)), b = sum(w (s x t)) over sum(w |s|^2).
    var = float(w @ (s**2).sum(axis=1))
    a = float(w @ (s * t).sum(axis=1)) / var
    b = float(w @ (s[:, 0] * t[:, 1] - s[:, 1] * t[:, 0])) / var
    rotation = np.array([[a, -b], [b, a]])
    return np.hstack([rotation, (mu_t - rotation @ mu_s)[:, None]])


def crop_pose(points: np.ndarray, size: int) -> np.ndarray:
    """Where one frame's canonical crop sits in the frame: (centre x, centre y, log scale, angle).

    Smoothing these, rather than the matrix entries, lets the centre follow the head closely while scale and
    rotation, which real heads change slowly, are smoothed harder: no jitter and no zoom pumping.
    """
    transform = fit_similarity(alignment_points(points), template(size))
    centre = apply(cv2.invertAffineTransform(transform), np.array([size / 2, size / 2]))
    a, b = transform[0, 0], transform[1, 0]
    return np.array([centre[0], centre[1], np.log(np.hypot(a, b)), np.arctan2(b, a)])


def transform_from_pose(pose: np.ndarray, size: int) -> np.ndarray:
    """The 2x3 frame -> crop affine of a (centre x, centre y, log scale, angle) crop pose."""
    scale, angle = np.exp(pose[2]), pose[3]
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([rotation, (np.array([size / 2, size / 2]) - rotation @ pose[:2])[:, None]])


def cut(frame: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """The canonical crop: ``frame`` warped by ``transform`` into a size x size image (black outside the frame).

    A face much larger than the crop is first halved with a Gaussian pyramid, so shrinking does not alias.
    """
    transform = transform.astype(np.float64)
    while np.hypot(transform[0, 0], transform[0, 1]) < 0.5:
        frame = cv2.pyrDown(frame)
        transform[:, :2] *= 2.0
    return cv2.warpAffine(frame, transform, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


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
