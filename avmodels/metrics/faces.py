"""Face measures with real pretrained models: dlib's detector, 68-point predictor and face descriptor
(from the ``dlib-bin`` and ``face_recognition_models`` packages), and MediaPipe's face mesh.

- ``landmarks68``: 68 iBUG points per image (dlib, as ATVGnet's LMD and Wav2Pix's protocol assume; or MediaPipe
  through avprep's map), NaN where no face is found.
- ``lmd``: ATVGnet's landmark distance; ``akd``: HeadGAN's average keypoint distance (all 68 points).
- ``face_meshes`` / ``aed``: MediaPipe meshes, and HeadGAN's average expression distance between two clips'
  fits of avprep's morphable model.
- ``dlib_detectability``: Wav2Pix's measure, the share of images in which dlib finds a face and its 68
  landmarks; ``face_detectability`` is the same with MediaPipe's face mesh.
- ``identity_similarity`` / ``identity_accuracy``: cosine similarity of dlib's 128-d ResNet face descriptors
  (99.38% on LFW), a CSIM that needs no downloaded ArcFace; and nearest-speaker identification.
- ``speaker_identification``: a small CNN trained on the real crops names the speaker of each image (Wav2Pix's
  fine-tuned VGG-Face cannot be had here).

Generated faces are tight crops; detectors need context around a face, so every detector here sees each image
in the middle of a canvas twice its size, filled with its edge colours, scaled to 256 px (dlib's HOG detector
finds faces from about 80 px).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avmodels.metrics.images import rgb_images
from avmodels.pictures import from_uint8
from avprep.face.still import StillFaces, with_context
from avprep.face.still import landmarks68 as mesh_to_68

MOUTH = slice(48, 68)
PROBE_SIZE = 64


class MissingModels(RuntimeError):
    """A pretrained face model's package is not installed."""


@functools.lru_cache(maxsize=1)
def dlib_models():
    """(HOG detector, 68-point shape predictor, ResNet face descriptor), loaded once from the installed packages."""
    try:
        import dlib
    except ImportError:
        raise MissingModels("dlib is not installed: pip install dlib-bin (dlib's detector, landmarks and face "
                            "descriptor are used by avmodels' metrics)") from None
    spec = importlib.util.find_spec("face_recognition_models")  # located, not imported: it needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        raise MissingModels("face_recognition_models is not installed: pip install face_recognition_models (it "
                            "ships dlib's 68-point predictor and face descriptor)")
    models = Path(spec.submodule_search_locations[0]) / "models"
    return (dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat")))


def _dlib_faces(images: np.ndarray):
    """For each image: (canvas, its largest dlib face's 68-point shape) or None."""
    detector, predictor, _ = dlib_models()
    for image in images:
        canvas, scale, pad = with_context(image)
        found = detector(canvas, 1)
        if len(found) == 0:
            yield None
            continue
        largest = max(found, key=lambda box: box.width() * box.height())
        yield canvas, predictor(canvas, largest), scale, pad


def landmarks68(images: np.ndarray, detector: str = "dlib") -> np.ndarray:
    """(N, 68, 2) iBUG points in each image's pixels, NaN where no face is found: ``dlib`` (its HOG detector
    and 68-point predictor, as the papers) or ``mediapipe`` (the face mesh through avprep's 478 -> 68 map)."""
    images = rgb_images(images)
    out = np.full((len(images), 68, 2), np.nan)
    if detector == "dlib":
        for i, found in enumerate(_dlib_faces(images)):
            if found is not None:
                _, shape, scale, pad = found
                out[i] = np.array([(p.x, p.y) for p in shape.parts()]) / scale - pad
    elif detector == "mediapipe":
        with StillFaces() as faces:
            for i, image in enumerate(images):
                points = faces(image, tight=True)
                if points is not None:
                    out[i] = mesh_to_68(points)
    else:
        raise ValueError(f"detector must be 'dlib' or 'mediapipe', not {detector!r}")
    return out


def lmd(a: np.ndarray, b: np.ndarray, per_point: bool = False) -> float:
    """ATVGnet's landmark distance: for each frame, the mouth points 48-67 of both (T, 68, 2) sets are each
    centred on their own mean, and the 20 Euclidean distances between them are SUMMED (the released
    ``evaluation_matrix.py``; ``per_point``: their mean, the scale the paper's table implies); the mean over
    frames. Frames where either set is NaN (no face) are left out; NaN if none is left."""
    a, b = np.asarray(a, np.float64)[:, MOUTH], np.asarray(b, np.float64)[:, MOUTH]
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    distances = np.linalg.norm(a - b, axis=2)
    per_frame = distances.mean(axis=1) if per_point else distances.sum(axis=1)
    valid = np.isfinite(per_frame)
    return float(per_frame[valid].mean()) if valid.any() else float("nan")


def akd(a: np.ndarray, b: np.ndarray) -> float:
    """HeadGAN's average keypoint distance: the mean Euclidean distance in pixels between matching points of two
    (T, 68, 2) sets (not centred: head position and pose count), over frames where both have a face."""
    per_frame = np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=2).mean(axis=1)
    valid = np.isfinite(per_frame)
    return float(per_frame[valid].mean()) if valid.any() else float("nan")


def face_meshes(images: np.ndarray) -> np.ndarray:
    """(N, 478, 3) MediaPipe meshes in each image's pixels (face crops, meshed with context), NaN where none."""
    images = rgb_images(images)
    out = np.full((len(images), 478, 3), np.nan, np.float32)
    with StillFaces() as faces:
        for i, image in enumerate(images):
            points = faces(image, tight=True)
            if points is not None:
                out[i] = points
    return out


def aed(a: np.ndarray, b: np.ndarray) -> float:
    """HeadGAN's average expression distance between two clips of (T, 478, 3) meshes (``face_meshes``): each
    clip fitted with avprep's shipped morphable model as one track, the mean absolute difference of the
    expression coefficients (in units of each component's standard deviation), over frames where both have a
    face; NaN when one clip has none."""
    from avprep.morphable import fit_meshes, load_default_model

    found = np.isfinite(a).all(axis=(1, 2)) & np.isfinite(b).all(axis=(1, 2))
    if not found.any():
        return float("nan")
    model = load_default_model()
    a_fit, b_fit = fit_meshes(model, a), fit_meshes(model, b)
    return float(np.abs(a_fit.expression - b_fit.expression)[found].mean())


def dlib_detectability(images: np.ndarray) -> float:
    """Wav2Pix's measure: the share of images in which dlib finds a face (and so its 68 landmarks)."""
    images = rgb_images(images)
    if len(images) == 0:
        return float("nan")
    return sum(found is not None for found in _dlib_faces(images)) / len(images)


def face_detectability(images: np.ndarray) -> float:
    """The share of images in which MediaPipe's face mesh (static-image mode) finds a face."""
    images = rgb_images(images)
    if len(images) == 0:
        return float("nan")
    with StillFaces() as faces:
        return sum(faces(image, tight=True) is not None for image in images) / len(images)


def face_descriptors(images: np.ndarray) -> np.ndarray:
    """(N, 128) dlib ResNet descriptors of each image's largest face, unit length; NaN where no face is found."""
    _, _, encoder = dlib_models()
    images = rgb_images(images)
    out = np.full((len(images), 128), np.nan)
    for i, found in enumerate(_dlib_faces(images)):
        if found is not None:
            canvas, shape, _, _ = found
            descriptor = np.array(encoder.compute_face_descriptor(canvas, shape))
            out[i] = descriptor / np.linalg.norm(descriptor)
    return out


def identity_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of the dlib descriptors of image pairs a[i], b[i] (pairs where either has no face
    are left out; NaN if none is left). Two frames of one person score about 0.95, two people about 0.8."""
    a, b = rgb_images(a), rgb_images(b)
    if len(a) != len(b):
        raise ValueError(f"identity_similarity compares pairs: got {len(a)} and {len(b)} images")
    similarity = np.sum(face_descriptors(a) * face_descriptors(b), axis=1)
    valid = np.isfinite(similarity)
    return float(similarity[valid].mean()) if valid.any() else float("nan")


def identity_accuracy(images: np.ndarray, speakers: np.ndarray, gallery: np.ndarray,
                      gallery_speakers: np.ndarray) -> float:
    """Nearest-speaker identification: each image's dlib descriptor is compared (cosine) with the mean
    descriptor of each speaker's ``gallery`` images (real faces of the split's speakers); the share named right.
    An image without a face counts as wrong."""
    gallery_descriptors = face_descriptors(gallery)
    names = sorted(set(np.asarray(gallery_speakers).tolist()))
    centroids = []
    for name in names:
        rows = gallery_descriptors[np.asarray(gallery_speakers) == name]
        rows = rows[np.isfinite(rows).all(axis=1)]
        centre = rows.mean(axis=0) if len(rows) else np.full(128, np.nan)
        centroids.append(centre / np.linalg.norm(centre))
    scores = np.nan_to_num(face_descriptors(images) @ np.array(centroids).T, nan=-np.inf)
    named = np.array(names)[scores.argmax(axis=1)]
    found = np.isfinite(scores).any(axis=1)
    return float(np.mean(found & (named == np.asarray(speakers))))


class SpeakerProbe(nn.Module):
    """Four strided convolutions and a linear layer on 64 px faces: enough to tell a handful of people apart."""

    def __init__(self, speakers: int):
        super().__init__()
        layers, channels = [], [3, 32, 64, 128, 128]
        for channels_in, channels_out in zip(channels, channels[1:]):
            layers += [nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1), nn.BatchNorm2d(channels_out),
                       nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classify = nn.Linear(channels[-1], speakers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(images).mean((2, 3)))


def speaker_identification(train_images: np.ndarray, train_speakers: np.ndarray,
                           test_sets: dict[str, tuple[np.ndarray, np.ndarray]], speakers: int, *,
                           steps: int = 300, seed: int = 0) -> dict[str, float]:
    """Train a ``SpeakerProbe`` on real (uint8 NHWC) crops, return its accuracy on each named test set."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe = SpeakerProbe(speakers)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-3)
    images, labels = _tensors(train_images), torch.as_tensor(train_speakers, dtype=torch.int64)
    probe.train()
    for _ in range(steps):
        pick = torch.randint(len(images), (min(32, len(images)),), generator=generator)
        batch = images[pick]
        flip = torch.rand(len(batch), generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        loss = F.cross_entropy(probe(batch), labels[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    probe.eval()
    with torch.no_grad():
        return {name: float((probe(_tensors(test_images)).argmax(1) == torch.as_tensor(test_speakers)).float().mean())
                for name, (test_images, test_speakers) in test_sets.items()}


def _tensors(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC at any size -> float NCHW 64 px in [-1, 1]."""
    return F.interpolate(from_uint8(rgb_images(images)), size=(PROBE_SIZE, PROBE_SIZE), mode="area")
