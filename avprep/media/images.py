"""Image bytes the pipeline writes from RGB pixels: the same pixels and settings give the same bytes."""
from __future__ import annotations

import cv2
import numpy as np
import simplejpeg


def jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG, 4:2:0, encoded from RGB by libjpeg-turbo (no channel swap, as cv2 would need)."""
    return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality, "RGB", "420")


def png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


LR_FILTERS = ("pil_bicubic", "bicubic", "area")


def downsample(rgb: np.ndarray, size: int, method: str = "pil_bicubic") -> np.ndarray:
    """An RGB uint8 face shrunk to ``size`` x ``size`` (a low-resolution input):

    - ``pil_bicubic``: Ear-SR's official ``scipy.misc.imresize(hr, (8, 8), interp='bicubic')`` on a float image:
      scipy's byte scaling (the image's min..max stretched to 0..255, rounded) then PIL's bicubic, whose kernel
      widens with the shrink factor (antialiased);
    - ``bicubic``: OpenCV's INTER_CUBIC (a fixed 4 x 4 kernel: at 16x it samples rather than averages);
    - ``area``: OpenCV's pixel averaging.
    """
    if method == "pil_bicubic":
        from PIL import Image

        values = rgb.astype(np.float64)
        low, high = values.min(), values.max()
        stretched = (values - low) * (255.0 / (high - low) if high > low else 1.0)
        stretched = (stretched.clip(0, 255) + 0.5).astype(np.uint8)
        return np.asarray(Image.fromarray(stretched).resize((size, size), Image.Resampling.BICUBIC))
    if method not in LR_FILTERS:
        raise ValueError(f"lr_filter must be one of {', '.join(LR_FILTERS)}, not {method!r}")
    interpolation = cv2.INTER_CUBIC if method == "bicubic" else cv2.INTER_AREA
    return cv2.resize(rgb, (size, size), interpolation=interpolation)
