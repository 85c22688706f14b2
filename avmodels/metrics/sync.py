"""Audio-visual sync of a generated talking video, measured as extract measures real footage (avprep.face.sync):
the lip opening of the generated frames (MediaPipe's face mesh) against the loudness of the driving audio."""
from __future__ import annotations

import numpy as np

from avprep.face.points import mouth_opening
from avprep.face.still import StillFaces
from avprep.face.sync import estimate_offset, loudness_envelope

SAMPLE_RATE = 16000


def sync_offset(frames: np.ndarray, audio: np.ndarray, fps: float, max_lag: int = 15) -> tuple[int, float]:
    """(offset in frames, confidence) of uint8 RGB ``frames`` (T x H x W x 3, tight face crops) against 16 kHz
    ``audio`` starting with the first frame. 0 offset and a high confidence (0.3-0.8 on real talking faces) mean
    in sync; frames where no face is found are left out. Needs at least 2 x max_lag + 10 frames with a face."""
    with StillFaces() as faces:
        meshes = [faces(frame, tight=True) for frame in frames]
    mouth = np.array([np.nan if points is None else float(mouth_opening(points)) for points in meshes])
    loudness = loudness_envelope(np.asarray(audio, np.float32), SAMPLE_RATE, fps, len(frames))
    return estimate_offset(mouth, loudness, max_lag)
