"""MediaPipe face mesh (478 points with iris) on a face-centred crop, returned in original-frame pixels."""
from __future__ import annotations

import numpy as np

from avprep.face.points import MESH_POINTS
from avprep.face.quiet import native_stderr_silenced, started_quietly


class FaceMesher:
    """One face, followed over frames: MediaPipe's video mode reuses the previous landmarks as the next region
    of interest, and the crop handed to it follows the face, so small and large faces alike fill its input."""

    def __init__(self, roi_scale: float = 1.8):
        from mediapipe.python.solutions.face_mesh import FaceMesh

        with native_stderr_silenced():
            self._mesh = started_quietly(FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                                                  min_detection_confidence=0.5, min_tracking_confidence=0.5))
        self.roi_scale = roi_scale
        self._warned = False

    def __call__(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """Landmarks (478, 3) as x, y in frame pixels and depth z in the same pixel scale; None if no face.

        The region handed to MediaPipe is a plain slice of the frame (a square ``roi_scale`` times the face box,
        cut at the frame's edges): MediaPipe resizes its own input, so resampling here would only cost time.
        """
        height, width = frame.shape[:2]
        centre = (box[:2] + box[2:]) / 2
        half = max(float(box[2] - box[0]), float(box[3] - box[1]), 8.0) * self.roi_scale / 2
        x0, y0 = max(int(centre[0] - half), 0), max(int(centre[1] - half), 0)
        x1, y1 = min(int(centre[0] + half) + 1, width), min(int(centre[1] + half) + 1, height)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        region = np.ascontiguousarray(frame[y0:y1, x0:x1])
        if self._warned:
            result = self._mesh.process(region)
        else:  # MediaPipe warns once per graph, on its first face
            with native_stderr_silenced():
                result = self._mesh.process(region)
        if not result.multi_face_landmarks:
            return None
        self._warned = True
        points = landmarks_array(result.multi_face_landmarks[0])
        points *= x1 - x0  # MediaPipe normalises x and z by the width, y by the height
        points[:, 1] *= (y1 - y0) / (x1 - x0)
        points[:, 0] += x0
        points[:, 1] += y0
        return points

    def close(self) -> None:
        self._mesh.close()


def landmarks_array(landmarks) -> np.ndarray:
    """A NormalizedLandmarkList as a (478, 3) float32 array."""
    return np.array([(p.x, p.y, p.z) for p in landmarks.landmark[:MESH_POINTS]], dtype=np.float32)


def landmark_box(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points[:, :2].min(axis=0), points[:, :2].max(axis=0)]).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
