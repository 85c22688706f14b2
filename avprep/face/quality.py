"""Per-frame face quality: size, sharpness and head pose, with thresholds that flag poor frames."""
from __future__ import annotations

import cv2
import numpy as np

from avprep.face.points import CHIN, FOREHEAD, eye_centres

# The forehead-to-chin line of a frontal face leans back about this much in MediaPipe's depth (measured on the
# frontal astronaut photo); pitch is reported relative to it.
_NEUTRAL_PITCH_DEG = 10.0


def inter_ocular_px(points: np.ndarray) -> np.ndarray:
    """Distance between the eye centres, for (..., 478, d) landmarks."""
    left, right = eye_centres(points[..., :2])
    return np.linalg.norm(right - left, axis=-1)


def blur_score(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop at 128 x 128: low means blurred (motion, focus, upscaling).

    Measured at a fixed size so the threshold means the same for any canonical crop size."""
    grey = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), (128, 128), interpolation=cv2.INTER_AREA)
    laplacian = cv2.Laplacian(grey, cv2.CV_16S)  # exact (|values| <= 1020), and half the cost of float32
    return float(cv2.meanStdDev(laplacian)[1][0, 0] ** 2)


def head_pose(points: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll in degrees, (..., 3), from the mesh's own 3-D points (..., 478, 3) (x right, y down,
    z away from the camera).

    The head's x axis runs between the eye centres and its y axis from forehead to chin; yaw is positive when
    the face turns towards image right, pitch when it tilts down, roll when it tilts clockwise in the image.
    """
    left, right = eye_centres(points)
    x_axis = right - left
    x_axis /= np.linalg.norm(x_axis, axis=-1, keepdims=True)
    down = points[..., CHIN, :] - points[..., FOREHEAD, :]
    y_axis = down - (down * x_axis).sum(axis=-1, keepdims=True) * x_axis
    y_axis /= np.linalg.norm(y_axis, axis=-1, keepdims=True)
    yaw = np.degrees(np.arcsin(np.clip(-x_axis[..., 2], -1, 1)))
    pitch = np.degrees(np.arcsin(np.clip(y_axis[..., 2], -1, 1))) - _NEUTRAL_PITCH_DEG
    roll = np.degrees(np.arctan2(x_axis[..., 1], x_axis[..., 0]))
    return np.stack([yaw, pitch, roll], axis=-1)
