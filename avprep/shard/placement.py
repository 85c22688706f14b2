"""Where a recipe's square crop sits in a video's frames: each frame's aligned window (``crop_mode = "frame"``),
or one fixed axis-aligned square, the median of the windows over the clip (``"clip"``) or over the face track of
the whole video (``"video"``: HeadGAN's official crop, the median MTCNN box of the video), and how far a track's
windows move (the official rejection of a video whose boxes move too much).

Transforms are 2x3 affines from original-frame pixels to recipe-crop pixels; boxes are (x0, y0, x1, y1) squares in
original-frame pixels, NaN where a frame has no face.
"""
from __future__ import annotations

import numpy as np

from avprep.face import align
from avprep.shard.recipe import CROPS, Recipe


def crop_transform(recipe: Recipe, canonical: int) -> np.ndarray:
    """2x3 affine from canonical-crop pixels to recipe-crop pixels."""
    cx, cy, side = CROPS[recipe.crop]
    iod = align.INTER_OCULAR * canonical
    centre = np.array([0.5 * canonical + cx * iod, align.EYE_LINE_Y * canonical + cy * iod])
    scale = recipe.image_size / (side * iod)
    return np.array([[scale, 0, recipe.image_size / 2 - scale * centre[0]],
                     [0, scale, recipe.image_size / 2 - scale * centre[1]]])


def window_transforms(to_canonical: np.ndarray, recipe: Recipe, canonical: int) -> np.ndarray:
    """(N, 2, 3): each frame's aligned recipe window, from its (N, 2, 3) frame-to-canonical affines (align.npy)."""
    affines = np.asarray(to_canonical, np.float64)
    square = np.concatenate([affines, np.tile([[[0.0, 0.0, 1.0]]], (len(affines), 1, 1))], axis=1)
    return crop_transform(recipe, canonical) @ square


def window_boxes(transforms: np.ndarray, size: int) -> np.ndarray:
    """(N, 4) squares in frame pixels that (N, 2, 3) crop transforms of ``size`` px cut (centre +- side / 2)."""
    transforms = np.asarray(transforms, np.float64)
    centres = np.linalg.solve(transforms[:, :, :2], (np.full(2, size / 2) - transforms[:, :, 2])[..., None])[..., 0]
    sides = size / np.sqrt(np.abs(np.linalg.det(transforms[:, :, :2])))
    return np.concatenate([centres - sides[:, None] / 2, centres + sides[:, None] / 2], axis=1)


def fixed_square(boxes: np.ndarray, size: int) -> np.ndarray:
    """The 2x3 transform of one axis-aligned square, the median of ``boxes`` (centre and side; NaN rows left out)."""
    centres, sides = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2] - boxes[:, 0]
    (cx, cy), scale = np.nanmedian(centres, axis=0), size / np.nanmedian(sides)
    return np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]])


def box_motion(boxes: np.ndarray, width: int, height: int) -> float:
    """How far a track's boxes move: the largest L-infinity distance between the corners of any two, over the
    frame's mean side (the official ``detect_faces.py`` ``check_boxes``, threshold 0.45)."""
    spread = np.nanmax(boxes, axis=0) - np.nanmin(boxes, axis=0)
    return float(spread.max() / ((width + height) / 2))
