"""Build a morphable model from the 3-D face meshes that ``avprep extract`` stored in a prep folder.

Every frame's 468 face vertices are aligned to a common mean by generalised Procrustes (rotation, scale and
translation removed), in a canonical frame: centred, one inter-ocular distance per unit, and turned so that
``head_pose`` reads zero yaw, pitch and roll. A track is one person, so its mean shape is one identity sample
and its frames around that mean are expression samples; PCA of each gives the bases, sorted by variance.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from avprep.face.points import eye_centres
from avprep.face.quality import head_pose
from avprep.morphable.data import face_videos, read_video_tracks
from avprep.morphable.default import DEFAULT_BASIS
from avprep.morphable.model import MorphableModel, rotation_matrices
from avprep.morphable.topology import FACE_VERTICES, face_triangles

_PROCRUSTES_ROUNDS = 4
# A component whose deviation is below this fraction of the first one is numerical noise, not data.
_RANK_TOLERANCE = 1e-6


def build_model(prep_dir: str | os.PathLike, n_identity: int = 6, n_expression: int = 10,
                frames_per_track: int = 100) -> MorphableModel:
    """A model from every track of every ok video in ``prep_dir``; at most ``frames_per_track`` frames each.

    Fewer components are kept than asked when the data cannot support them: identity has at most one fewer
    than the number of tracks.
    """
    tracks = [vt.points[rows[_spread(len(rows), frames_per_track)]]
              for vt in map(read_video_tracks, face_videos(prep_dir)) for rows in vt.tracks]
    if len(tracks) < 2:
        raise ValueError(f"{prep_dir}: a model needs faces from at least two tracks, found {len(tracks)}")
    every_frame = align_shapes(np.concatenate(tracks).astype(np.float64))
    aligned = np.split(every_frame, np.cumsum([len(t) for t in tracks])[:-1])
    track_means = np.stack([frames.mean(axis=0) for frames in aligned])
    mean = track_means.mean(axis=0)
    identity, identity_std = principal_components(track_means - mean, n_identity)
    expression, expression_std = principal_components(
        np.concatenate([frames - m for frames, m in zip(aligned, track_means)]), n_expression)
    return MorphableModel(mean=mean, identity=identity, expression=expression, triangles=face_triangles(mean),
                          landmarks=np.arange(FACE_VERTICES), identity_std=identity_std,
                          expression_std=expression_std)


def build_and_save(prep_dir: str | os.PathLike, out_path: str | os.PathLike, n_identity: int = 6,
                   n_expression: int = 10) -> MorphableModel:
    """Build a model from ``prep_dir`` and save it as ``out_path`` (.npz, layout in avprep.morphable.model)."""
    model = build_model(prep_dir, n_identity=n_identity, n_expression=n_expression)
    model.save(out_path)
    return model


def align_shapes(shapes: np.ndarray) -> np.ndarray:
    """Shapes (N, V, 3) aligned by similarity transforms to their canonical mean (generalised Procrustes)."""
    reference = canonical(shapes[0])
    for _ in range(_PROCRUSTES_ROUNDS):
        reference = canonical(similarity_align(shapes, reference).mean(axis=0))
    return similarity_align(shapes, reference)


def similarity_align(shapes: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each shape (N, V, 3) moved by the rotation, scale and translation that best fit it to ``reference``."""
    centred = shapes - shapes.mean(axis=1, keepdims=True)
    target = reference - reference.mean(axis=0)
    u, singular, vt = np.linalg.svd(np.einsum("nvi,vj->nij", centred, target))
    flip = np.ones_like(singular)
    flip[:, -1] = np.sign(np.linalg.det(u @ vt))  # a rotation, never a reflection
    rotation = u * flip[:, None, :] @ vt  # applied on the right: aligned = scale * centred @ rotation
    scale = (singular * flip).sum(axis=1) / np.einsum("nvi,nvi->n", centred, centred)
    return scale[:, None, None] * centred @ rotation + reference.mean(axis=0)


def canonical(shape: np.ndarray) -> np.ndarray:
    """``shape`` centred, scaled to an inter-ocular distance of 1 and turned to zero head pose.

    ``head_pose`` reads pitch against the face's own forehead-to-chin line, which is not an axis of any one
    rotation, so the turn is repeated until it settles (it does in two or three rounds).
    """
    left, right = eye_centres(shape)
    shape = (shape - shape.mean(axis=0)) / np.linalg.norm(right - left)
    for _ in range(3):
        yaw, pitch, roll = head_pose(shape)
        shape = shape @ rotation_matrices(np.array([pitch, yaw, roll]))
    return shape


def principal_components(samples: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The leading unit-norm directions (k, V, 3) of zero-mean ``samples`` (n, V, 3), and their deviations."""
    flat = samples.reshape(len(samples), -1)
    variance, directions = np.linalg.eigh(flat.T @ flat / max(len(samples) - 1, 1))  # ascending
    std = np.sqrt(np.clip(variance[::-1], 0, None))
    keep = min(count, len(samples) - 1, int(np.sum(std > _RANK_TOLERANCE * std.max(initial=0))))
    return directions[:, ::-1][:, :keep].T.reshape(keep, *samples.shape[1:]), std[:keep]


def _spread(length: int, count: int) -> np.ndarray:
    """Up to ``count`` indices spread evenly over ``range(length)``."""
    return np.unique(np.linspace(0, length - 1, min(length, count)).round().astype(int))


def remake_default_basis(work_dir: str | os.PathLike, out_path: str | os.PathLike = DEFAULT_BASIS) -> MorphableModel:
    """Generate the demo corpus in ``work_dir``, extract it and build the default basis from it."""
    from avprep.pipeline.config import ExtractConfig
    from avprep.pipeline.inputs import discover
    from avprep.pipeline.runner import RunOptions, run_extract
    from avprep.synth.catalogue import make_demo_corpus

    corpus, prep = Path(work_dir) / "corpus", Path(work_dir) / "prep"
    make_demo_corpus(corpus, speakers=7, clips_per_speaker=2, seconds=4.0)
    run_extract(discover([corpus]), prep, ExtractConfig(), RunOptions(jobs=2))
    return build_and_save(prep, out_path, n_identity=6, n_expression=10)
