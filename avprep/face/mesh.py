"""MediaPipe face mesh (478 points with iris) on a face-centred crop, returned in original-frame pixels."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from avprep.face.points import MESH_POINTS
from avprep.face.quiet import native_stderr_silenced

# MediaPipe's own face mesh graph (detector, landmark model with attention/iris refinement, ROI tracking). Its
# built-in detection and tracking thresholds (0.5 and 0.5) are those FaceMesh uses by default.
_GRAPH = "mediapipe/modules/face_landmark/face_landmark_front_cpu.binarypb"
_PRESENCE_SCORE = "facelandmarkcpu__face_presence_score"  # inside the graph: the landmark model's face flag
_FRAME_STEP_US = 33_333  # MediaPipe needs increasing timestamps; only their order matters to this graph
_SHARED = threading.local()  # one mesher per thread, kept across tracks and videos

# A NormalizedLandmarkList serialises each point as one length-prefixed message of three tagged floats:
# 0x0a 0x0f | 0x0d x | 0x15 y | 0x1d z (17 bytes). The face mesh sets no other field, so the whole list
# reads as one packed array; anything else falls back to the protobuf accessors.
_WIRE_POINT = np.dtype([("head", "u1", 2), ("x_tag", "u1"), ("x", "<f4"), ("y_tag", "u1"), ("y", "<f4"),
                        ("z_tag", "u1"), ("z", "<f4")])
_WIRE_TAGS = {"head": (0x0A, 0x0F), "x_tag": 0x0D, "y_tag": 0x15, "z_tag": 0x1D}


class FaceMesher:
    """One face, followed over frames: MediaPipe's video mode reuses the previous landmarks as the next region
    of interest, and the crop handed to it follows the face, so small and large faces alike fill its input.

    The graph is driven directly rather than through ``mediapipe.solutions.face_mesh.FaceMesh``, whose
    ``process`` builds a namedtuple class per call and reads landmarks point by point (together ~0.8 ms per
    frame here, a sixth of the mesh itself).
    """

    def __init__(self, roi_scale: float = 1.8):
        import mediapipe
        from mediapipe.python import CalculatorGraph, ImageFormat, packet_creator, packet_getter, resource_util

        site = Path(mediapipe.__file__).resolve().parents[1]
        resource_util.set_resource_dir(str(site))
        self._image = lambda pixels: packet_creator.create_image_frame(image_format=ImageFormat.SRGB, data=pixels)
        self._get_faces, self._get_float = packet_getter.get_proto_list, packet_getter.get_float
        self._graph = CalculatorGraph(binary_graph_path=str(site / _GRAPH))
        self._latest = None
        self._score = float("nan")
        self._graph.observe_output_stream("multi_face_landmarks", self._keep, True)
        self._graph.observe_output_stream(_PRESENCE_SCORE, self._keep_score, False)
        self._graph.start_run({"num_faces": packet_creator.create_int(1),
                               "with_attention": packet_creator.create_bool(True),
                               "use_prev_landmarks": packet_creator.create_bool(True)})
        self._timestamp = 0
        self.roi_scale = roi_scale
        self._quiet = False  # MediaPipe logs while building its models, on the first frames with a face
        self.broken = False  # an error inside the graph: for_new_track builds a new one

    @classmethod
    def for_new_track(cls) -> "FaceMesher":
        """This thread's mesher, with MediaPipe's tracking state cleared.

        A new graph costs ~0.1 s (its models load on the first frame): a quarter of the face work on a 1 s clip.
        So one graph serves every track of every video a worker handles. A blank frame clears the video-mode
        state (no face, so the next frame starts from detection): results are bit-identical to a fresh graph's.
        """
        mesher = getattr(_SHARED, "mesher", None)
        if mesher is None or mesher.broken:
            mesher = _SHARED.mesher = cls()
        else:
            mesher._landmarks(np.zeros((16, 16, 3), np.uint8))
        return mesher

    def _keep(self, stream: str, packet) -> None:
        self._latest = packet

    def _keep_score(self, stream: str, packet) -> None:
        self._score = self._get_float(packet)

    def __call__(self, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray | None, float]:
        """Landmarks (478, 3) as x, y in frame pixels and depth z in the same pixel scale (None if no face), and
        the landmark model's face-presence score (0-1; MediaPipe keeps the mesh at >= 0.5; NaN if it did not run).

        The region handed to MediaPipe is a plain slice of the frame (a square ``roi_scale`` times the face box,
        cut at the frame's edges): MediaPipe resizes its own input, so resampling here would only cost time.
        """
        height, width = frame.shape[:2]
        centre = (box[:2] + box[2:]) / 2
        half = max(float(box[2] - box[0]), float(box[3] - box[1]), 8.0) * self.roi_scale / 2
        x0, y0 = max(int(centre[0] - half), 0), max(int(centre[1] - half), 0)
        x1, y1 = min(int(centre[0] + half) + 1, width), min(int(centre[1] + half) + 1, height)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None, float("nan")
        region = np.ascontiguousarray(frame[y0:y1, x0:x1])
        if self._quiet:
            points = self._landmarks(region)
        else:
            with native_stderr_silenced():
                points = self._landmarks(region)
            self._quiet = points is not None
        if points is None:
            return None, self._score
        points *= x1 - x0  # MediaPipe normalises x and z by the width, y by the height
        points[:, 1] *= (y1 - y0) / (x1 - x0)
        points[:, 0] += x0
        points[:, 1] += y0
        return points, self._score

    def _landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """Normalised landmarks of the one face in ``image`` (RGB), or None."""
        self._timestamp += _FRAME_STEP_US
        self._latest, self._score = None, float("nan")
        try:
            self._graph.add_packet_to_input_stream("image", self._image(image).at(self._timestamp))
            self._graph.wait_until_idle()
        except Exception:
            self.broken = True
            raise
        if self._latest is None or self._latest.is_empty():
            return None
        faces = self._get_faces(self._latest)
        return landmarks_array(faces[0]) if faces else None


def landmarks_array(landmarks) -> np.ndarray:
    """A NormalizedLandmarkList as a (478, 3) float32 array, read straight from its wire bytes when it has the
    face mesh's layout."""
    packed = np.frombuffer(landmarks.SerializeToString(), np.uint8)
    if packed.size == len(landmarks.landmark) * _WIRE_POINT.itemsize:
        packed = packed.view(_WIRE_POINT)[:MESH_POINTS]
        if all((packed[field] == tag).all() for field, tag in _WIRE_TAGS.items()):
            return np.stack([packed["x"], packed["y"], packed["z"]], axis=1)
    return np.array([(p.x, p.y, p.z) for p in landmarks.landmark[:MESH_POINTS]], dtype=np.float32)


def landmark_box(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points[:, :2].min(axis=0), points[:, :2].max(axis=0)]).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
