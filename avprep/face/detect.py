"""Face detectors: MediaPipe's bundled short- and full-range models, or insightface's SCRFD from a local pack."""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np

from avprep.face.quiet import native_stderr_silenced, started_quietly


@dataclasses.dataclass(frozen=True)
class Detection:
    box: np.ndarray  # x0, y0, x1, y1 in frame pixels
    score: float

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


class MediaPipeDetector:
    """BlazeFace short range (faces within about 2 m, i.e. large in the frame) first; when it finds nothing the
    full-range model looks for small, distant faces. Both models ship inside the mediapipe wheel."""

    broken = False  # an error inside a MediaPipe graph: make_detector builds a new detector

    def __init__(self, min_confidence: float = 0.5):
        from mediapipe.python.solutions.face_detection import FaceDetection

        with native_stderr_silenced():
            self._short = started_quietly(FaceDetection(model_selection=0, min_detection_confidence=min_confidence))
            self._full = started_quietly(FaceDetection(model_selection=1, min_detection_confidence=min_confidence))

    def __call__(self, frame: np.ndarray) -> list[Detection]:
        try:
            found = self._run(self._short, frame) or self._run(self._full, frame)
        except Exception:
            self.broken = True
            raise
        return sorted(found, key=lambda d: -d.area)

    @staticmethod
    def _run(model, frame: np.ndarray) -> list[Detection]:
        height, width = frame.shape[:2]
        result = model.process(frame)
        detections = []
        for detection in result.detections or []:
            box = detection.location_data.relative_bounding_box
            x0, y0 = box.xmin * width, box.ymin * height
            corners = np.array([x0, y0, x0 + box.width * width, y0 + box.height * height], dtype=np.float32)
            detections.append(Detection(corners, float(detection.score[0])))
        return detections


def find_scrfd_model(root: str | Path) -> Path:
    """The SCRFD detector file of an insightface model pack folder (e.g. ``buffalo_l/det_10g.onnx``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--insightface-root {root} is not a folder")
    candidates = sorted(root.glob("det_*.onnx")) + sorted(root.glob("*scrfd*.onnx"))
    if not candidates:
        raise FileNotFoundError(
            f"no SCRFD detector (det_*.onnx or *scrfd*.onnx) in {root}; insightface packs such as buffalo_l hold "
            "one, and cannot be downloaded by this tool: copy a pack there, or drop --insightface-root to use "
            "MediaPipe's bundled detector")
    return candidates[0]


class InsightFaceDetector:
    """insightface's SCRFD detector, on the CPU through onnxruntime, from a local model pack."""

    broken = False  # onnxruntime sessions keep no state that an error could spoil

    def __init__(self, root: str | Path, min_confidence: float = 0.5, input_size: int = 640):
        from insightface.model_zoo import get_model

        self._model = get_model(str(find_scrfd_model(root)), providers=["CPUExecutionProvider"])
        self._model.prepare(ctx_id=-1, input_size=(input_size, input_size), det_thresh=min_confidence)

    def __call__(self, frame: np.ndarray) -> list[Detection]:
        boxes, _ = self._model.detect(np.ascontiguousarray(frame[..., ::-1]))  # insightface expects BGR
        found = [Detection(box[:4].astype(np.float32), float(box[4])) for box in boxes]
        return sorted(found, key=lambda d: -d.area)


_SHARED = threading.local()  # detectors built by this thread, kept across videos


def make_detector(insightface_root: str | None, min_confidence: float):
    """This thread's detector for these settings, built once: detectors keep nothing between frames, and
    building one costs ~50 ms, a sixth of the face work on a 1 s clip."""
    built = _SHARED.__dict__.setdefault("detectors", {})
    key = (insightface_root, min_confidence)
    if key not in built or built[key].broken:
        built[key] = (InsightFaceDetector(insightface_root, min_confidence) if insightface_root
                      else MediaPipeDetector(min_confidence))
    return built[key]
