"""ATVGnet's landmark space: each frame's 68 points Procrustes-aligned to a mean shape and scaled by 5 (136
values, pose and size removed), and a PCA of that space whose first coefficients AT-net predicts.

The official code ships a mean shape and a PCA made from dlib landmarks on LRW (``basics/``); they belong to
those landmarks, so here both are fitted on the training split's own landmarks, once, before training, and kept
as buffers (in every checkpoint, never a file the user must make).
"""
from __future__ import annotations

import torch
from torch import nn

SCALE = 5.0  # the official normalised landmarks are multiplied by 5 before the PCA


def standardise(points: torch.Tensor) -> torch.Tensor:
    """(..., 68, 2) centred on their mean, scaled to unit Frobenius norm (as ``scipy.spatial.procrustes``)."""
    centred = points - points.mean(dim=-2, keepdim=True)
    return centred / centred.flatten(-2).norm(dim=-1).clamp_min(1e-8)[..., None, None]


def align_to(points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``points`` (..., 68, 2) standardised, then rotated and scaled onto the standardised ``target`` (68, 2)
    by orthogonal Procrustes (scipy's convention, reflections allowed)."""
    shapes = standardise(points.float())
    u, singular, vh = torch.linalg.svd(shapes.transpose(-1, -2) @ target)
    return shapes @ (u @ vh) * singular.sum(dim=-1)[..., None, None]


class LandmarkPCA(nn.Module):
    """The mean shape (68, 2), and the PCA of aligned, x5 landmarks: ``mean`` (136) and ``basis`` (136, K)."""

    def __init__(self, components: int = 6):
        super().__init__()
        self.register_buffer("mean_shape", torch.zeros(68, 2))
        self.register_buffer("mean", torch.zeros(136))
        self.register_buffer("basis", torch.zeros(136, components))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, points: torch.Tensor, iterations: int = 5) -> None:
        """Generalised Procrustes for the mean shape, then the PCA, from (N, 68, 2) landmarks."""
        points = points.float()
        mean = standardise(points[0])
        for _ in range(iterations):
            mean = standardise(align_to(points, mean).mean(dim=0))
        self.mean_shape.copy_(mean)
        flat = self.normalise(points)
        self.mean.copy_(flat.mean(dim=0))
        _, _, vh = torch.linalg.svd(flat - self.mean, full_matrices=False)
        self.basis.copy_(vh[: self.basis.shape[1]].T)
        self.fitted.fill_(True)

    def normalise(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 68, 2) pixels -> (..., 136) aligned to the mean shape, x5 (the space VG-net and D read)."""
        return align_to(points, self.mean_shape).flatten(-2) * SCALE

    def project(self, normalised: torch.Tensor) -> torch.Tensor:
        return (normalised - self.mean) @ self.basis

    def reconstruct(self, coefficients: torch.Tensor) -> torch.Tensor:
        return coefficients @ self.basis.T + self.mean
