"""Reenactment geometry: a driver's expressions and head poses drawn with the reference's identity, as the
official ``reenact.py`` does it, in the recipe crop's pixels.

The reference face and every driving frame are fitted with avprep's morphable model (``avprep.morphable``) from
their MediaPipe meshes; the NMFC images are rendered from the reference's identity coefficients with the
driver's expression coefficients and head rotation. The driver's camera scale and position are adapted to the
reference first (official ``adapt_cam_params``, on by default there): each frame's scale is multiplied by the
reference's over the driver's mean, its position divided by its scale is shifted so its mean lands on the
reference's, and both are smoothed over 15 frames. So a small, off-centre driver still yields a head the size of
the reference and where the reference is, moving as the driver moves.
"""
from __future__ import annotations

import numpy as np

from avprep.morphable import MorphableModel, fit_meshes, nmfc_colours, posed_vertices, render_nmfc

SMOOTHING_FRAMES = 15  # the official smoothen_signal window


def adapted_cameras(driver: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(T, 6) driver cameras (scale, pitch, yaw, roll, tx, ty) moved to the reference camera's scale and place,
    rotations kept (official ``adapt_cam_params`` with translation adaptation, not standardised)."""
    driver = np.asarray(driver, np.float64)
    scale = _smoothed(driver[:, 0] * reference[0] / driver[:, 0].mean())
    normalised = driver[:, 4:6] / driver[:, :1]
    normalised = _smoothed(normalised - normalised.mean(axis=0) + reference[4:6] / reference[0])
    return np.concatenate([scale[:, None], driver[:, 1:4], scale[:, None] * normalised], axis=1)


def driven_nmfc(model: MorphableModel, reference_mesh: np.ndarray, driver_meshes: np.ndarray,
                size: int) -> tuple[np.ndarray, np.ndarray]:
    """(reference NMFC (S, S, 3), driven NMFCs (T, S, S, 3)), float32 in [0, 1]: the reference fitted alone,
    the driver as one track, its frames drawn with the reference's identity and adapted cameras."""
    reference = fit_meshes(model, np.asarray(reference_mesh)[None])
    driver = fit_meshes(model, driver_meshes)
    cameras = adapted_cameras(driver.camera, reference.camera[0])
    colours = nmfc_colours(model)
    draw = lambda expression, camera: np.clip(render_nmfc(  # noqa: E731
        posed_vertices(model, reference.identity, expression, camera), model.triangles, colours, size), 0, 1)
    return (draw(reference.expression[0], reference.camera[0]),
            np.stack([draw(e, c) for e, c in zip(driver.expression, cameras)]))


def _smoothed(signal: np.ndarray, window: int = SMOOTHING_FRAMES) -> np.ndarray:
    """A moving average over ``window`` frames, the ends padded with the first and last values (the official
    ``smoothen_signal``; an even window leans one frame to the past)."""
    signal = np.asarray(signal, np.float64)
    left, right = window // 2, window // 2 if window % 2 else window // 2 - 1
    padded = np.concatenate([np.repeat(signal[:1], left, 0), signal, np.repeat(signal[-1:], right, 0)])
    kernel = np.ones(window) / window
    if signal.ndim == 1:
        return np.convolve(padded, kernel, "valid")
    return np.stack([np.convolve(padded[:, k], kernel, "valid") for k in range(signal.shape[1])], axis=1)
