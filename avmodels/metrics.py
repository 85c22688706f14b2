"""Metrics of generated faces that need no downloaded network.

- ``face_detectability``: the share of images in which MediaPipe's face mesh (static-image mode: its BlazeFace
  detector, then the 478-point mesh) finds a face. Each image is first placed in the middle of a canvas twice
  its size, filled with its edge colours, and scaled to 256 px: tight crops otherwise leave the detector no
  context. This stands in for Wav2Pix's "dlib finds 68 landmarks" (90.25% in the paper).
- ``speaker_identification``: a small CNN (the ``SpeakerProbe``) is trained on real face crops with their speaker
  labels, then asked who is in each test image; the metric is its accuracy. The paper fine-tuned VGG-Face (50.08%
  over 10 speakers); no such weights can be had here, so the probe learns the speakers from the shards themselves.
  Its accuracy on real held-out crops is reported beside it as the ceiling.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avprep.face.quiet import native_stderr_silenced, started_quietly

DETECT_SIZE = 256
PROBE_SIZE = 64


def face_detectability(images: np.ndarray) -> float:
    """Share of N x H x W x 3 uint8 RGB images in which the face mesh finds a face."""
    from mediapipe.python.solutions.face_mesh import FaceMesh

    if len(images) == 0:
        return float("nan")
    with native_stderr_silenced():
        mesh = started_quietly(FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                        min_detection_confidence=0.5))
        try:
            found = sum(mesh.process(_with_context(image)).multi_face_landmarks is not None for image in images)
        finally:
            mesh.close()
    return found / len(images)


def _with_context(image: np.ndarray) -> np.ndarray:
    size = image.shape[0]
    padded = cv2.copyMakeBorder(image, size // 2, size // 2, size // 2, size // 2, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(cv2.resize(padded, (DETECT_SIZE, DETECT_SIZE), interpolation=cv2.INTER_LINEAR))


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
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return F.interpolate(tensor, size=(PROBE_SIZE, PROBE_SIZE), mode="area")
