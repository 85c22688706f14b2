"""Online face tracking: detect now and then, follow one face with the mesh, split tracks at cuts and losses.

One face is followed at a time: the largest one when a track starts (the dominant speaker), kept while it
persists. The detector runs every ``detect_every`` frames while a face is followed (to count faces and check the
track still sits on one), and on every frame while none is. A track ends at a scene cut or after more than
``max_gap`` frames without a face; a face that comes back later starts a new track.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from avprep.face.mesh import FaceMesher, iou, landmark_box


@dataclasses.dataclass
class Observation:
    """What the tracker saw on one frame (before gap filling and smoothing)."""

    index: int
    track: int  # -1: no track alive on this frame
    points: np.ndarray | None  # (478, 3) frame pixels, None when the mesh found no face
    n_faces: int  # faces the detector saw at its latest run
    det_score: float  # detector score of the followed face at its latest run; NaN without one
    mesh_score: float = float("nan")  # the landmark model's face-presence score on this frame; NaN: not run


class FaceTracker:
    def __init__(self, detector, *, detect_every: int = 10, max_gap: int = 8, cut_threshold: float = 40.0):
        self.detector = detector
        self.detect_every = detect_every
        self.max_gap = max_gap
        self.cut_threshold = cut_threshold
        self.mesher: FaceMesher | None = None
        self.track = -1
        self.tracks_started = 0
        self.box: np.ndarray | None = None
        self.misses = 0
        self.last_detection = -(10**9)
        self.n_faces = 0
        self.det_score = float("nan")
        self.max_faces = 0
        self._thumb: np.ndarray | None = None

    def step(self, index: int, frame: np.ndarray) -> Observation:
        if self._is_cut(frame):
            self._end_track()
        if self.track < 0 or index - self.last_detection >= self.detect_every:
            self._detect(index, frame)
        if self.track < 0:
            return Observation(index, -1, None, self.n_faces, float("nan"))
        points, mesh_score = self.mesher(frame, self.box)
        box = None if points is None else landmark_box(points)
        if box is not None and iou(box, self.box) < 0.2:
            points = None  # the mesh jumped to something else: treat as a miss, and search afresh next frame
            self.mesher.forget()
        track = self.track
        if points is None:
            self.misses += 1
            self.last_detection = -(10**9)  # look again on the next frame
            if self.misses > self.max_gap:
                self._end_track()
        else:
            self.box = box
            self.misses = 0
        return Observation(index, track, points, self.n_faces, self.det_score, mesh_score)

    def _detect(self, index: int, frame: np.ndarray) -> None:
        detections = self.detector(frame)
        self.last_detection = index
        self.n_faces = len(detections)
        self.max_faces = max(self.max_faces, self.n_faces)
        if self.track >= 0:
            overlapping = [d for d in detections if iou(d.box, self.box) > 0.2]
            self.det_score = overlapping[0].score if overlapping else float("nan")
            return
        if detections:
            largest = detections[0]
            self.track = self.tracks_started
            self.tracks_started += 1
            self.box = largest.box
            self.det_score = largest.score
            self.misses = 0
            self.mesher = FaceMesher.for_new_track()

    def _end_track(self) -> None:
        self.mesher = None  # the graph stays with the thread for the next track (FaceMesher.for_new_track)
        self.track = -1
        self.box = None
        self.misses = 0

    def _is_cut(self, frame: np.ndarray) -> bool:
        """A scene cut: the mean change of a coarse grey thumbnail (every 8th pixel) exceeds ``cut_threshold``."""
        height, width = frame.shape[:2]
        thumb = cv2.cvtColor(cv2.resize(frame, (width // 8, height // 8), interpolation=cv2.INTER_NEAREST),
                             cv2.COLOR_RGB2GRAY)
        previous, self._thumb = self._thumb, thumb
        return previous is not None and cv2.mean(cv2.absdiff(thumb, previous))[0] > self.cut_threshold

    def close(self) -> None:
        self._end_track()
