"""The morphable face model: a mean shape plus linear identity and expression bases on one mesh.

Stored as an ``.npz`` (read with ``allow_pickle=False``) holding these arrays, so a basis derived from BFM or
FLAME can be brought in by resampling it onto the same layout:

    mean            (V, 3) float32   mean shape, model units (the default: about one inter-ocular distance)
    identity        (K_id, V, 3)     identity directions (rows of a PCA: unit norm in the default)
    expression      (K_exp, V, 3)    expression directions
    triangles       (F, 3) int32     vertex indices, wound so that a face turned to the camera has a negative
                                     signed area in image pixels (x right, y down, depth growing away)
    landmarks       (L,) int32       vertices fitted to 2-D landmarks (default: the 468 MediaPipe face vertices)
    identity_std    (K_id,)          optional standard deviation of each identity coefficient (1 when absent:
    expression_std  (K_exp,)         optional  the coefficients are then taken as already standardised)

The axes are those of MediaPipe's points in a frame: x right, y down, z away from the camera.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass
class MorphableModel:
    """A face as ``mean + identity coefficients . identity + expression coefficients . expression``."""

    mean: np.ndarray
    identity: np.ndarray
    expression: np.ndarray
    triangles: np.ndarray
    landmarks: np.ndarray
    identity_std: np.ndarray | None = None
    expression_std: np.ndarray | None = None

    def __post_init__(self):
        """Store float32 bases and int32 indices, and fill missing deviations with ones."""
        self.mean = np.asarray(self.mean, dtype=np.float32)
        self.identity = np.asarray(self.identity, dtype=np.float32).reshape(-1, *self.mean.shape)
        self.expression = np.asarray(self.expression, dtype=np.float32).reshape(-1, *self.mean.shape)
        self.triangles = np.asarray(self.triangles, dtype=np.int32)
        self.landmarks = np.asarray(self.landmarks, dtype=np.int32)
        self.identity_std = _deviations(self.identity_std, len(self.identity))
        self.expression_std = _deviations(self.expression_std, len(self.expression))

    def shape(self, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """Vertices (..., V, 3) for coefficients ``identity`` (K_id,) and ``expression`` (..., K_exp)."""
        return (self.mean + np.tensordot(identity, self.identity, axes=1)
                + np.tensordot(expression, self.expression, axes=1))

    def save(self, path: str | os.PathLike) -> None:
        np.savez(path, mean=self.mean, identity=self.identity, expression=self.expression,
                 triangles=self.triangles, landmarks=self.landmarks,
                 identity_std=self.identity_std, expression_std=self.expression_std)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MorphableModel":
        with np.load(path, allow_pickle=False) as data:
            return cls(**{key: data[key] for key in data.files if key in cls.__dataclass_fields__})


def _deviations(std: np.ndarray | None, count: int) -> np.ndarray:
    return np.ones(count, np.float32) if std is None else np.asarray(std, dtype=np.float32).reshape(count)


def rotation_matrices(angles: np.ndarray) -> np.ndarray:
    """Rotations (..., 3, 3) from (..., 3) pitch, yaw, roll in degrees: R = Rz(roll) Ry(yaw) Rx(pitch).

    In the frame's axes (x right, y down, z away) these take the signs of the yaw, pitch and roll that
    ``avprep extract`` writes to frames.parquet, so a fitted camera can be compared with them.
    """
    angles = np.asarray(angles, dtype=np.float64)
    flat = Rotation.from_euler("ZYX", angles.reshape(-1, 3)[:, ::-1], degrees=True).as_matrix()
    return flat.reshape(*angles.shape[:-1], 3, 3)


def rotation_angles(matrices: np.ndarray) -> np.ndarray:
    """Pitch, yaw, roll in degrees (..., 3) of rotations (..., 3, 3): the inverse of rotation_matrices."""
    matrices = np.asarray(matrices, dtype=np.float64)
    flat = Rotation.from_matrix(matrices.reshape(-1, 3, 3)).as_euler("ZYX", degrees=True)[:, ::-1]
    return flat.reshape(*matrices.shape[:-2], 3)
