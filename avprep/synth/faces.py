"""Real face photos that ship inside installed dependencies, with known landmark positions.

Test videos built from real photos exercise face detectors the way real data does, while
needing no download and no data files in this repository.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import cv2
import numpy as np

# Landmark order of every (6, 2) landmark array in this package.
LANDMARK_NAMES = ("eye_left", "eye_right", "mouth_left", "mouth_right", "upper_lip", "lower_lip")

# Pixel positions in the ORIGINAL images, measured once with MediaPipe face mesh
# (refine_landmarks=True): iris centres 468/473, mouth corners 61/291, inner lips 13/14.
# "left" is the left side of the image, not of the person.
_LANDMARKS = {
    "astronaut": ((203.5, 101.2), (246.5, 103.3), (202.6, 139.6), (245.3, 140.8), (223.0, 143.4), (222.6, 150.5)),
    "hanks": ((34.0, 50.2), (70.4, 49.3), (38.6, 91.6), (67.1, 90.0), (56.8, 94.2), (56.7, 94.4)),
    "rachel": ((87.2, 328.5), (128.5, 308.6), (114.0, 371.5), (147.7, 351.7), (130.9, 360.8), (131.0, 361.1)),
    "ross": ((490.0, 318.9), (536.6, 331.6), (485.8, 370.1), (528.5, 381.1), (504.7, 382.8), (503.6, 387.0)),
    "chandler": ((762.6, 398.1), (802.7, 403.8), (764.9, 436.2), (805.5, 442.1), (781.0, 442.3), (781.0, 450.8)),
    "phoebe": ((1149.4, 326.8), (1192.2, 323.9), (1153.7, 367.9), (1197.3, 363.3), (1169.8, 366.7), (1170.2, 371.5)),
    "monica": ((293.2, 210.7), (321.0, 193.7), (314.0, 247.4), (338.8, 233.8), (320.8, 242.2), (320.7, 242.3)),
}

IDENTITIES = tuple(_LANDMARKS)

# Crop width in inter-ocular distances: the whole head, but little of the neighbours in the group photo.
_CROP_IODS = 5.0


@dataclass(frozen=True)
class Face:
    """A square RGB face crop and its landmarks (LANDMARK_NAMES order) in crop pixel coordinates."""

    image: np.ndarray
    landmarks: np.ndarray

    @property
    def eye_mid(self) -> np.ndarray:
        return self.landmarks[:2].mean(axis=0)

    @property
    def inter_ocular(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


def load_face(identity: str) -> Face:
    """The face crop of ``identity``; a fresh copy, so callers may draw on it."""
    face = _cached_face(identity)
    return Face(face.image.copy(), face.landmarks.copy())


@functools.cache
def _cached_face(identity: str) -> Face:
    if identity not in _LANDMARKS:
        raise ValueError(f"unknown identity {identity!r}; choose one of {', '.join(IDENTITIES)}")
    landmarks = np.array(_LANDMARKS[identity], dtype=np.float64)
    return _crop_face(_source_image(identity), landmarks)


def _source_image(identity: str) -> np.ndarray:
    """The RGB photo the identity's landmarks were measured on."""
    if identity == "astronaut":
        import skimage.data

        return skimage.data.astronaut()
    name = "Tom_Hanks_54745.png" if identity == "hanks" else "t1.jpg"
    path = os.path.join(_insightface_dir(), "data", "images", name)
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read the face photo {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _insightface_dir() -> str:
    # find_spec locates the package without importing it (importing insightface takes seconds).
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("insightface is not installed; its sample photos provide the test faces")
    return spec.submodule_search_locations[0]


def _crop_face(image: np.ndarray, landmarks: np.ndarray) -> Face:
    """Square crop centred between the eyes and the mouth, padded by edge replication."""
    eye_mid = landmarks[:2].mean(axis=0)
    centre = (eye_mid + landmarks[2:4].mean(axis=0)) / 2
    side = int(round(_CROP_IODS * np.linalg.norm(landmarks[1] - landmarks[0])))
    x0, y0 = (np.round(centre) - side // 2).astype(int)
    h, w = image.shape[:2]
    pad = [max(0, -y0), max(0, y0 + side - h), max(0, -x0), max(0, x0 + side - w)]
    padded = cv2.copyMakeBorder(image, *pad, cv2.BORDER_REPLICATE)
    top, left = y0 + pad[0], x0 + pad[2]
    crop = np.ascontiguousarray(padded[top : top + side, left : left + side])
    return Face(crop, landmarks - (x0, y0))
