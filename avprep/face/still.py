"""Faces in still images (a reference photo, a generated frame), and a recipe's crop of one.

Extract follows faces through video; a single image has no track. Here MediaPipe's whole face-mesh graph in
static-image mode (its BlazeFace detector, then the 478-point mesh with iris) finds the face, and the crop is
placed exactly as extract and shard place it on a video frame: the similarity fit of the upper face to the
canonical template (``avprep.face.align``), then the recipe's window of the canonical crop.
"""
from __future__ import annotations

import cv2
import numpy as np

from avprep.face import align
from avprep.face.points import IBUG68
from avprep.face.quiet import native_stderr_silenced, started_quietly

CONTEXT_SIZE = 256  # tight crops are meshed in the middle of a canvas twice their size, scaled to this


def with_context(image: np.ndarray) -> tuple[np.ndarray, float, tuple[int, int]]:
    """(canvas, scale, (pad x, pad y)): a tight face crop in the middle of a canvas twice its size, filled with
    its edge colours, scaled so its longer side is ``CONTEXT_SIZE``: detectors need context around a face. A
    canvas pixel p is image pixel p / scale - pad."""
    pad_y, pad_x = image.shape[0] // 2, image.shape[1] // 2
    canvas = cv2.copyMakeBorder(image, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
    scale = CONTEXT_SIZE / max(canvas.shape[:2])
    canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas), scale, (pad_x, pad_y)


class StillFaces:
    """A static-image face mesh, kept open for many images: ``with StillFaces() as faces: faces(image)``."""

    def __enter__(self) -> "StillFaces":
        from mediapipe.python.solutions.face_mesh import FaceMesh

        with native_stderr_silenced():
            self._mesh = started_quietly(FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                                  min_detection_confidence=0.5))
        return self

    def __exit__(self, *exc) -> None:
        self._mesh.close()

    def __call__(self, image: np.ndarray, *, tight: bool = False) -> np.ndarray | None:
        """(478, 3) landmarks of the face in an RGB uint8 ``image``, x and y in its pixels (z in the same scale),
        or None. ``tight``: the image is a face crop (a generated face): the detector needs context around it,
        so the image is meshed in the middle of a canvas twice its size filled with its edge colours."""
        canvas, scale, (pad_x, pad_y) = with_context(image) if tight else (image, 1.0, (0, 0))
        with native_stderr_silenced():
            found = self._mesh.process(np.ascontiguousarray(canvas)).multi_face_landmarks
        if not found:
            return None
        points = np.array([(p.x, p.y, p.z) for p in found[0].landmark], dtype=np.float64)
        size = np.array([canvas.shape[1], canvas.shape[0], canvas.shape[1]])
        points = points * size / scale - [pad_x, pad_y, 0]
        return points.astype(np.float32)


def to_canonical(points: np.ndarray, canonical_size: int) -> np.ndarray:
    """The 2x3 affine from image pixels to the canonical crop, fitted to one image's landmarks as extract fits a
    frame's (unsmoothed: a still has no neighbours)."""
    return align.transform_from_pose(align.crop_pose(points.astype(np.float64), canonical_size), canonical_size)


def landmarks68(points: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG 300-W points from the 478-point mesh, by avprep's map (``avprep.face.points.IBUG68``)."""
    return np.asarray(points)[IBUG68, :2]
