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
