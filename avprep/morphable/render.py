"""NMFC images: the fitted face mesh drawn with each vertex coloured by its place on the mean face.

A Normalised Mean Face Coordinate (NMFC) image (HeadGAN, "Head2Head") colours every vertex with its
mean-shape x, y, z scaled to [0, 1]; rendered with a z-buffer it tells a generator, per pixel, which point of
the face is seen there. Drawn here on the CPU by a small numba rasteriser: barycentric colours, nearest surface
wins, triangles turned away from the camera are skipped. Pixel (row, col) is sampled at its centre
(col + 0.5, row + 0.5), the convention of MediaPipe's pixel coordinates.
"""
from __future__ import annotations

import numba
import numpy as np

from avprep.morphable.model import MorphableModel


def nmfc_colours(model: MorphableModel) -> np.ndarray:
    """Vertex colours (V, 3) in [0, 1]: the mean shape's coordinates scaled per axis (the NMFC definition)."""
    low, high = model.mean.min(axis=0), model.mean.max(axis=0)
    return ((model.mean - low) / (high - low)).astype(np.float32)


def render_nmfc(vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray,
                size: int | tuple[int, int] = 256) -> np.ndarray:
    """Draw ``vertices`` (V, 3: x, y in image pixels, depth growing away) as a (H, W, 3) float32 image.

    ``size`` is the side of a square image or (height, width). Triangles wound as in the model (facing the
    camera when their signed area is negative) are drawn; the background is 0.
    """
    height, width = (size, size) if np.isscalar(size) else size
    image = np.zeros((height, width, 3), np.float32)
    depth = np.full((height, width), np.inf)
    _rasterise(np.ascontiguousarray(vertices, dtype=np.float64), np.ascontiguousarray(triangles, dtype=np.int64),
               np.ascontiguousarray(colours, dtype=np.float32), image, depth)
    return image


def apply_affine(vertices: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Vertices (..., V, 3) moved by a 2x3 similarity (e.g. a row of align.npy: frame to crop pixels); depth is
    scaled with the image so the surface keeps its shape."""
    moved = np.array(vertices, dtype=np.float64)
    moved[..., :2] = vertices[..., :2] @ affine[:, :2].T + affine[:, 2]
    moved[..., 2] *= np.sqrt(abs(np.linalg.det(affine[:, :2])))
    return moved


@numba.njit(cache=True)
def _rasterise(vertices, triangles, colours, image, depth):
    """Z-buffer every camera-facing triangle into ``image`` and ``depth`` (both updated in place)."""
    height, width = depth.shape
    for t in range(triangles.shape[0]):
        a, b, c = triangles[t, 0], triangles[t, 1], triangles[t, 2]
        ax, ay = vertices[a, 0], vertices[a, 1]
        bx, by = vertices[b, 0], vertices[b, 1]
        cx, cy = vertices[c, 0], vertices[c, 1]
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if not area < 0:  # turned away, edge-on, or NaN
            continue
        left = max(int(np.ceil(min(ax, bx, cx) - 0.5)), 0)
        right = min(int(np.floor(max(ax, bx, cx) - 0.5)), width - 1)
        top = max(int(np.ceil(min(ay, by, cy) - 0.5)), 0)
        bottom = min(int(np.floor(max(ay, by, cy) - 0.5)), height - 1)
        for row in range(top, bottom + 1):
            py = row + 0.5
            for col in range(left, right + 1):
                px = col + 0.5
                # Each weight is the sub-triangle opposite its vertex over the whole; all >= 0 inside.
                wa = ((cx - bx) * (py - by) - (cy - by) * (px - bx)) / area
                wb = ((ax - cx) * (py - cy) - (ay - cy) * (px - cx)) / area
                wc = 1.0 - wa - wb
                if wa < 0 or wb < 0 or wc < 0:
                    continue
                z = wa * vertices[a, 2] + wb * vertices[b, 2] + wc * vertices[c, 2]
                if z < depth[row, col]:
                    depth[row, col] = z
                    for k in range(3):
                        image[row, col, k] = wa * colours[a, k] + wb * colours[b, k] + wc * colours[c, k]
