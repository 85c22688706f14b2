"""Similarity alignment of a face to a canonical template, and the canonical crop every recipe cuts from.

Canonical crop of side S: eyes level at y = 0.40 S, eye centres 0.20 S apart around x = 0.5 S. That leaves
room for every recipe's own crop as an affine sub-window: an FFHQ-style crop (about 4 inter-ocular distances,
centred a little below the eyes; HeadGAN, Ear-SR), DAVS's eyes+mouth template (about 3.4), ATVGnet's (about
3) and Wav2Pix's tight box (about 2.2). Only rigid points (eye rings, nose bridge to tip) drive the transform,
so speech does not move the crop.
"""
from __future__ import annotations

import cv2
import numpy as np

from avprep.face.points import NOSE_LINE, eye_centres

EYE_LINE_Y = 0.40
INTER_OCULAR = 0.20

# Template in inter-ocular units around the eye midpoint (x right, y down): the two eye centres, then the nose
# line from bridge to tip (mean of MediaPipe meshes of the bundled real faces, put on the centre line).
_TEMPLATE_IOD = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, -0.04], [0.0, 0.11], [0.0, 0.24], [0.0, 0.36],
                          [0.0, 0.49], [0.0, 0.64], [0.0, 0.74]])
# The eyes pin scale and rotation best; the nose line steadies them and fixes the centre under expression.
_WEIGHTS = np.array([3.0, 3.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])


def template(size: int) -> np.ndarray:
    """Template points in canonical-crop pixels for a crop of side ``size``."""
    return (_TEMPLATE_IOD * INTER_OCULAR + [0.5, EYE_LINE_Y]) * size


def alignment_points(points: np.ndarray) -> np.ndarray:
    """The mesh points matching the template rows, (..., 9, 2)."""
    left, right = eye_centres(points[..., :2])
    return np.concatenate([left[..., None, :], right[..., None, :], points[..., NOSE_LINE, :2]], axis=-2)


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


def canonical_transform(points: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine from frame pixels to canonical-crop pixels for one frame's (478, 3) landmarks."""
    return fit_similarity(alignment_points(points), template(size))


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


def smooth_at(values: np.ndarray, valid: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Kernel-weighted mean of the centre row of ``values`` (2r+1, ...) over its ``valid`` rows."""
    weights = kernel * valid
    return np.tensordot(weights / weights.sum(), values, axes=1)
