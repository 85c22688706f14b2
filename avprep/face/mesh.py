"""MediaPipe face mesh (478 points with iris) on a region that follows the face, in original-frame pixels."""
from __future__ import annotations

import contextlib
import math
import threading
from pathlib import Path

import numpy as np

from avprep.face import align
from avprep.face.points import MESH_POINTS
from avprep.face.quiet import native_stderr_silenced

# MediaPipe's landmark subgraph alone (region warp, landmark model with attention/iris refinement, presence gate
# at 0.5, projection back to the image), for every frame: FaceMesher places its region (anchor_region). It runs
# 0.45 ms a frame faster than the whole face_landmark_front graph, and placing the region in Python takes most of
# that back: in extract the two cost the same (0.98x, median of six interleaved rounds).
_GRAPH = """
input_stream: "image"
input_stream: "roi"
output_stream: "face_landmarks"
node {
  calculator: "FaceLandmarkCpu"
  input_stream: "IMAGE:image"
  input_stream: "ROI:roi"
  input_side_packet: "WITH_ATTENTION:with_attention"
  output_stream: "LANDMARKS:face_landmarks"
}
"""
# The whole graph (detection, a region turned by the detected eyes, the same landmark subgraph), for the first
# frame of a face only: it finds faces at any roll, where a region placed from the tracker's box is upright.
_FINDER = "mediapipe/modules/face_landmark/face_landmark_front_cpu.binarypb"
FIND_SCALE = 1.8  # the finder sees a square this many times the tracker's box, so the face fills its detector
_PRESENCE_SCORE = "facelandmarkcpu__face_presence_score"  # in both graphs: the landmark model's face flag
_FRAME_STEP_US = 33_333  # MediaPipe needs increasing timestamps; only their order matters to these graphs
_SHARED = threading.local()  # one mesher per thread, kept across tracks and videos

# MediaPipe's own region rule (face_landmark_front): the bounding square of the previous landmarks, 1.5 times as
# wide, turned so that the outer eye corners (mesh points 33 and 263) lie level.
REGION_SCALE = 1.5
EYE_CORNERS = (33, 263)
REANCHOR = 0.15  # anchor the region afresh when it strays this far (of its side) from MediaPipe's own rule

# A NormalizedLandmarkList serialises each point as one length-prefixed message of three tagged floats:
# 0x0a 0x0f | 0x0d x | 0x15 y | 0x1d z (17 bytes), so x, y and z lie 5 bytes apart. The face mesh sets no other
# field, so the whole list reads as one strided array; anything else falls back to the protobuf accessors.
_WIRE_POINT_BYTES, _WIRE_FIELD_BYTES = 17, 5
_WIRE_MARKS = ((0, b"\x0a"), (1, b"\x0f"), (2, b"\x0d"), (7, b"\x15"), (12, b"\x1d"))  # (offset, byte) in each point


class FaceMesher:
    """One face, followed over frames. The first frame of a face (or the first after a miss) is found by
    MediaPipe's whole graph on a crop around the tracker's box; every frame, that one included, is then meshed by
    the landmark subgraph on a region carried by the previous frame's upper face (anchor_region).

    The graphs are driven directly rather than through ``mediapipe.solutions.face_mesh.FaceMesh``, whose
    ``process`` builds a namedtuple class per call and reads landmarks point by point (together ~0.8 ms per
    frame here, a sixth of the mesh itself).
    """

    def __init__(self):
        import mediapipe
        from google.protobuf import text_format
        from mediapipe.framework import calculator_pb2
        from mediapipe.framework.formats import rect_pb2
        from mediapipe.python import CalculatorGraph, ImageFormat, packet_creator, packet_getter, resource_util
        from mediapipe.python._framework_bindings import _packet_getter

        site = Path(mediapipe.__file__).resolve().parents[1]
        resource_util.set_resource_dir(str(site))
        self._image = lambda pixels: packet_creator.create_image_frame(image_format=ImageFormat.SRGB, data=pixels)
        self._rect = lambda **fields: packet_creator.create_proto(rect_pb2.NormalizedRect(**fields))
        self._get_float = packet_getter.get_float
        # landmarks are read as wire bytes: get_proto(_list) would parse them into objects
        self._get_one = _packet_getter._get_serialized_proto
        self._get_first = lambda packet: next(iter(_packet_getter._get_serialized_proto_list(packet)), None)
        self._graph = CalculatorGraph(graph_config=text_format.Parse(_GRAPH, calculator_pb2.CalculatorGraphConfig()))
        self._finder = CalculatorGraph(binary_graph_path=str(site / _FINDER))
        self._latest = None
        self._score = float("nan")
        self._graph.observe_output_stream("face_landmarks", self._keep, True)
        self._finder.observe_output_stream("multi_face_landmarks", self._keep, True)
        for graph in (self._graph, self._finder):
            graph.observe_output_stream(_PRESENCE_SCORE, self._keep_score, False)
        self._graph.start_run({"with_attention": packet_creator.create_bool(True)})
        self._finder.start_run({"num_faces": packet_creator.create_int(1),
                                "with_attention": packet_creator.create_bool(True),
                                "use_prev_landmarks": packet_creator.create_bool(True)})
        self._timestamp = 0
        self._previous: np.ndarray | None = None  # this face's landmarks on the last frame, frame pixels
        self._anchor: tuple[complex, float] | None = None  # see anchor_region
        self._loud = {self._graph, self._finder}  # MediaPipe logs while building its models, on a graph's first frame
        self.broken = False  # an error inside a graph: for_new_track builds a new mesher

    @classmethod
    def for_new_track(cls) -> "FaceMesher":
        """This thread's mesher, forgetting the previous face.

        New graphs cost ~0.1 s (their models load on the first frame): a quarter of the face work on a 1 s
        clip. So one mesher serves every track of every video a worker handles.
        """
        mesher = getattr(_SHARED, "mesher", None)
        if mesher is None or mesher.broken:
            mesher = _SHARED.mesher = cls()
        mesher.forget()
        return mesher

    def forget(self) -> None:
        """Drop the last landmarks, so the next frame finds the face afresh around the box it is given."""
        self._previous = None

    def _keep(self, stream: str, packet) -> None:
        self._latest = packet

    def _keep_score(self, stream: str, packet) -> None:
        self._score = self._get_float(packet)

    def __call__(self, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray | None, float]:
        """Landmarks (478, 3) as x, y in frame pixels and depth z in the same pixel scale (None if no face), and
        the landmark model's face-presence score (0-1; MediaPipe keeps the mesh at >= 0.5; NaN if it did not run).
        ``box`` (x0, y0, x1, y1) says where to look when the previous frame gave no landmarks."""
        if self._previous is None:
            self._previous, self._anchor = self._find(frame, box), None
            if self._previous is None:
                return None, self._score
        own_centre, own_side, angle = region(self._previous)
        if self._anchor is not None:
            centre, side, _ = anchored_region(self._previous, self._anchor)
            if abs(side / own_side - 1) > REANCHOR or np.abs(centre - own_centre).max() > REANCHOR * own_side:
                self._anchor = None  # the head turned or tilted: its upper face no longer places the region
        if self._anchor is None:  # where the region starts, or starts again, it is MediaPipe's own
            self._anchor, centre, side = anchor_region(self._previous), own_centre, own_side
        points, score = self._mesh(frame, centre, side, angle)
        self._previous = points
        return points, score

    def _find(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """A face's first landmarks, by the whole graph on a square ``FIND_SCALE`` times the box (cut at the
        frame's edges). A blank frame first clears the graph's tracking state: results are bit-identical to a
        fresh graph's."""
        self._run(self._finder, self._get_first, image=np.zeros((16, 16, 3), np.uint8))
        height, width = frame.shape[:2]
        centre = (box[:2] + box[2:]) / 2
        half = max(float(box[2] - box[0]), float(box[3] - box[1]), 8.0) * FIND_SCALE / 2
        x0, y0 = max(int(centre[0] - half), 0), max(int(centre[1] - half), 0)
        x1, y1 = min(int(centre[0] + half) + 1, width), min(int(centre[1] + half) + 1, height)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        points = self._run(self._finder, self._get_first, image=np.ascontiguousarray(frame[y0:y1, x0:x1]))
        return None if points is None else to_frame(points, x0, y0, x1 - x0, y1 - y0)

    def _mesh(self, frame: np.ndarray, centre: np.ndarray, side: float, angle: float):
        """Mesh the square ``REGION_SCALE * side`` wide around ``centre``, turned by ``angle``. Only the part of the
        frame under the turned square is handed over (MediaPipe copies what it gets)."""
        height, width = frame.shape[:2]
        side *= REGION_SCALE
        reach = side / 2 * (abs(math.cos(angle)) + abs(math.sin(angle)))
        x0, y0 = max(int(centre[0] - reach), 0), max(int(centre[1] - reach), 0)
        x1, y1 = min(int(centre[0] + reach) + 2, width), min(int(centre[1] + reach) + 2, height)
        if x1 - x0 < 8 or y1 - y0 < 8 or side < 8:
            return None, float("nan")
        w, h = x1 - x0, y1 - y0
        rect = self._rect(x_center=(centre[0] - x0) / w, y_center=(centre[1] - y0) / h, width=side / w,
                          height=side / h, rotation=angle)
        points = self._run(self._graph, self._get_one, image=np.ascontiguousarray(frame[y0:y1, x0:x1]), roi=rect)
        return (None if points is None else to_frame(points, x0, y0, w, h)), self._score

    def _run(self, graph, landmarks_of, **inputs) -> np.ndarray | None:
        """Send one frame's inputs (the image as pixels, anything else as a packet) and wait: its normalised
        landmarks, or None."""
        self._timestamp += _FRAME_STEP_US
        self._latest, self._score = None, float("nan")
        try:
            with native_stderr_silenced() if graph in self._loud else contextlib.nullcontext():
                for stream, value in inputs.items():
                    packet = self._image(value) if stream == "image" else value
                    graph.add_packet_to_input_stream(stream, packet.at(self._timestamp))
                graph.wait_until_idle()
        except Exception:
            self.broken = True
            raise
        if self._latest is None or self._latest.is_empty():
            return None
        self._loud.discard(graph)
        serialized = landmarks_of(self._latest)
        return None if serialized is None else landmarks_array(serialized)


def to_frame(points: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Landmarks normalised to a ``width`` x ``height`` image cut at (x0, y0) -> frame pixels (MediaPipe normalises
    x and z by the width, y by the height)."""
    points *= width
    points[:, 1] *= height / width
    points[:, 0] += x0
    points[:, 1] += y0
    return points


def anchor_region(points: np.ndarray) -> tuple[complex, float]:
    """MediaPipe's region for these landmarks, as (centre, side) in the upper face's own frame (the alignment
    template's, unit crop; the centre as x + iy): a region that then moves with the eyes, nose bridge and temples
    but not with the jaw. MediaPipe's rule takes the bounding box of all landmarks, so its region breathes with
    speech, and every landmark with it: on generated heads the upper face's landmarks are 2-3x steadier in the
    anchored region (benchmarks/landmark_stability.py)."""
    (x, y), side, _ = region(points)
    c, d = align.to_unit_crop(points)
    return c * complex(x, y) + d, side * abs(c)


def anchored_region(points: np.ndarray, anchor: tuple[complex, float]) -> tuple[np.ndarray, float, float]:
    """(centre, side, angle) of the next region: the anchor placed by these landmarks' upper face, turned so
    that the outer eye corners lie level (MediaPipe's rule)."""
    c, d = align.to_unit_crop(points)
    centre = (anchor[0] - d) / c
    return np.array([centre.real, centre.imag]), anchor[1] / abs(c), eye_angle(points)


def region(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(centre, side, angle) of MediaPipe's next region for a face whose landmarks were ``points``: the centre
    and longer side of their bounding box, and the turn that levels the outer eye corners."""
    box = landmark_box(points)
    return (box[:2] + box[2:]) / 2, float(max(box[2] - box[0], box[3] - box[1])), eye_angle(points)


def eye_angle(points: np.ndarray, left: int = EYE_CORNERS[0], right: int = EYE_CORNERS[1]) -> float:
    """The region's turn (MediaPipe's convention) that levels ``points[left]`` and ``points[right]``: the image-left
    and image-right eye of an upright face."""
    (lx, ly), (rx, ry) = points[left, :2], points[right, :2]
    return -math.atan2(-(ry - ly), rx - lx)


def landmarks_array(serialized: bytes) -> np.ndarray:
    """A serialized NormalizedLandmarkList as a (478, 3) float32 array, read straight from its wire bytes when it
    has the face mesh's layout."""
    n = len(serialized) // _WIRE_POINT_BYTES
    if n >= MESH_POINTS and len(serialized) == n * _WIRE_POINT_BYTES and all(
            serialized[offset::_WIRE_POINT_BYTES] == mark * n for offset, mark in _WIRE_MARKS):
        return np.ndarray((MESH_POINTS, 3), "<f4", serialized, 3, (_WIRE_POINT_BYTES, _WIRE_FIELD_BYTES)).copy()
    from mediapipe.framework.formats import landmark_pb2

    landmarks = landmark_pb2.NormalizedLandmarkList.FromString(serialized)
    return np.array([(p.x, p.y, p.z) for p in landmarks.landmark[:MESH_POINTS]], dtype=np.float32)


def landmark_box(points: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) of the points, reduced column by column (numpy's reduction over axis 0 of a narrow
    array is several times slower, and this runs twice a frame: in the tracker and in ``region``)."""
    x, y = points[:, 0], points[:, 1]
    return np.array([x.min(), y.min(), x.max(), y.max()], dtype=np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
