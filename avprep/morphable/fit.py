"""Fit the morphable model to a face track's 2-D landmarks, frame by frame (as HeadGAN conditions on it).

Each frame has a weak-perspective camera, stored as a row of 6 numbers:

    scale   pixels per model unit
    pitch, yaw, roll   degrees, R = Rz(roll) Ry(yaw) Rx(pitch) (the signs of frames.parquet's head pose)
    tx, ty  pixels

A model point X lands at ``scale * (R X)[:2] + (tx, ty)`` in the frame, at depth ``scale * (R X)[2]`` pixels.
The identity coefficients are shared by the whole track; expression coefficients are per frame.

The fit is a Gauss-Newton least-squares problem over the whole track at once: every frame's camera and
expression and the track's identity. Cameras start from the best affine map of the mean shape onto each frame
(made a scaled rotation); each step then solves for all changes together. The coefficients are pulled towards 0
in proportion to 1/std^2 (a Gaussian prior whose weight is the assumed landmark error squared), the expressions'
frame-to-frame acceleration is penalised, and after each step they are clamped to +-3 std. The unknowns of one
frame touch only their neighbours in time and the shared identity, so each step is a sparse banded solve with
the identity eliminated last: its cost grows linearly with the track. Two or three steps converge from the
affine start. Finally the cameras are smoothed over time with the same second-difference penalty (a Whittaker
smoother) and the coefficients, linear for fixed cameras, are solved once more exactly. Residuals are measured
in inter-ocular distances, so the settings below mean the same for any face size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu
from scipy.spatial.transform import Rotation

from avprep.face.quality import inter_ocular_px
from avprep.morphable.data import read_video_tracks
from avprep.morphable.model import MorphableModel, rotation_angles, rotation_matrices
from avprep.morphable.topology import FACE_VERTICES

_CHUNK_FRAMES = 256  # frames linearised at once: their Jacobian takes about 40 MB


@dataclass(frozen=True)
class FitConfig:
    iterations: int = 3  # Gauss-Newton steps on cameras and coefficients together
    # Assumed landmark error in inter-ocular distances: the priors weigh as much as this much misfit.
    noise_iod: float = 0.01
    # Second-difference penalties relative to the landmark misfit (Whittaker smoother weights, per frame);
    # 0.1 only calms jitter faster than about 3 frames, 1.0 smooths head motion faster than about 6 frames.
    expression_smoothing: float = 0.1
    camera_smoothing: float = 1.0
    bound_std: float = 3.0  # coefficients are kept within this many standard deviations


@dataclass
class TrackFit:
    identity: np.ndarray  # (K_id,)
    expression: np.ndarray  # (T, K_exp)
    camera: np.ndarray  # (T, 6) scale, pitch, yaw, roll, tx, ty (layout in the module docstring)
    reprojection_px: np.ndarray  # (T,) mean distance between fitted and given landmarks, pixels
    reprojection_iod: np.ndarray  # (T,) the same in inter-ocular distances


def fit_track(model: MorphableModel, points_2d: np.ndarray, iod_px: np.ndarray,
              config: FitConfig = FitConfig()) -> TrackFit:
    """Fit one track: ``points_2d`` (T, 468, >=2) MediaPipe points in frame pixels (no NaN), ``iod_px`` (T,).

    Only the points listed in ``model.landmarks`` are used, against the model vertices of the same index.
    """
    points = np.asarray(points_2d, dtype=np.float64)[:, model.landmarks, :2]
    iod = np.asarray(iod_px, dtype=np.float64)
    basis = _LandmarkBasis(model)
    camera = _initial_camera(basis.mean, points)
    identity, expression = np.zeros(len(model.identity)), np.zeros((len(points), len(model.expression)))
    for _ in range(config.iterations):
        camera, identity, expression = _step(basis, camera, identity, expression, points, iod, config)
    camera = _smooth_camera(camera, config)
    _, identity, expression = _step(basis, camera, identity, expression, points, iod, config, move_camera=False)
    error = np.linalg.norm(project(basis.shapes(identity, expression), camera)[..., :2] - points, axis=-1)
    reprojection = error.mean(axis=1)
    return TrackFit(identity=identity, expression=expression, camera=camera, reprojection_px=reprojection,
                    reprojection_iod=reprojection / iod)


def fit_video(model: MorphableModel, video_dir: str | os.PathLike,
              config: FitConfig = FitConfig()) -> list[tuple[np.ndarray, TrackFit]]:
    """Fit every track of a video in a prep folder: (frame indices, fit) per track, frames with landmarks only."""
    video = read_video_tracks(video_dir)
    return [(rows, fit_track(model, video.points[rows], video.iod_px[rows], config)) for rows in video.tracks]


def fit_meshes(model: MorphableModel, meshes: np.ndarray, config: FitConfig = FitConfig()) -> TrackFit:
    """The fit of (T, 478, 3) MediaPipe meshes in any pixel frame (a crop, a generated face) as one track;
    frames without a face (NaN rows) take the nearest frame's mesh. Raises ValueError when no frame has one."""
    meshes = np.asarray(meshes, np.float64)
    found = np.flatnonzero(np.isfinite(meshes).all(axis=(1, 2)))
    if not len(found):
        raise ValueError("no face found in any frame to fit the morphable model to")
    meshes = meshes[found[np.abs(np.arange(len(meshes))[:, None] - found[None]).argmin(axis=1)]]
    return fit_track(model, meshes[:, :FACE_VERTICES], inter_ocular_px(meshes), config)


def posed_vertices(model: MorphableModel, identity: np.ndarray, expression: np.ndarray,
                   camera: np.ndarray) -> np.ndarray:
    """All model vertices (..., V, 3) in frame pixels with depth, for expression (..., K_exp), camera (..., 6)."""
    return project(model.shape(identity, expression), camera)


def project(shapes: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """Model-space shapes (..., V, 3) through cameras (..., 6): frame pixels x, y and depth in pixels."""
    camera = np.asarray(camera, dtype=np.float64)
    rotated = shapes @ np.swapaxes(rotation_matrices(camera[..., 1:4]), -1, -2)
    posed = camera[..., 0, None, None] * rotated
    posed[..., :2] += camera[..., None, 4:6]
    return posed


class _LandmarkBasis:
    """The model restricted to its fitted vertices, with expression and identity directions stacked."""

    def __init__(self, model: MorphableModel):
        directions = np.concatenate([model.expression, model.identity])[:, model.landmarks]
        self.mean = model.mean[model.landmarks].astype(np.float64)
        self.flat = directions.reshape(len(directions), -1).astype(np.float64)
        self.n_expression = len(model.expression)
        self.std = np.concatenate([model.expression_std, model.identity_std]).astype(np.float64)
        expression = self.flat[:self.n_expression]
        self.expression_gram = expression @ expression.T  # squared size of an expression change, model units

    def shapes(self, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
        coefficients = np.concatenate([expression, np.broadcast_to(identity, (len(expression), len(identity)))], 1)
        return self.mean + (coefficients @ self.flat).reshape(len(expression), *self.mean.shape)


def _initial_camera(shape: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Cameras (T, 6) from the best affine map of ``shape`` onto each frame, made a scaled rotation."""
    centre = shape.mean(axis=0)
    centred = points - points.mean(axis=1, keepdims=True)
    solution = np.linalg.lstsq(shape - centre, centred.transpose(1, 0, 2).reshape(len(shape), -1), rcond=None)[0]
    affine = solution.reshape(3, len(points), 2).transpose(1, 2, 0)  # (T, 2, 3)
    u, singular, vt = np.linalg.svd(affine, full_matrices=False)
    rows = u @ vt
    rotation = np.concatenate([rows, np.cross(rows[:, 0], rows[:, 1])[:, None]], axis=1)
    scale = singular.mean(axis=1)
    shift = points.mean(axis=1) - scale[:, None] * (rows @ centre)
    return _camera(scale, rotation, shift)


def _camera(scale: np.ndarray, rotation: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return np.column_stack([scale, rotation_angles(rotation), shift])


def _step(basis: _LandmarkBasis, camera: np.ndarray, identity: np.ndarray, expression: np.ndarray,
          points: np.ndarray, iod: np.ndarray, config: FitConfig, move_camera: bool = True):
    """One Gauss-Newton step on cameras, expressions and identity; with the cameras held, the exact solution.

    Per frame the unknowns are (camera change, expression), shared by all frames the identity; the prior and the
    expression smoothing enter as extra least-squares rows, and the clamping to the bounds follows the step.
    """
    normal, gradient = _normal_equations(basis, camera, identity, expression, points, iod, move_camera)
    n_camera = 6 if move_camera else 0
    n_frame = n_camera + basis.n_expression  # unknowns of one frame: camera change, expression
    prior = np.concatenate([np.zeros(n_camera), config.noise_iod**2 / basis.std**2])
    current = np.concatenate([np.zeros((len(points), n_camera)), expression], axis=1)
    smoothing = sp.kron(second_difference_penalty(len(points)),
                        sp.block_diag([sp.csc_matrix((n_camera, n_camera)),
                                       config.expression_smoothing * basis.expression_gram]))
    step_frames, step_identity = _solve_arrow(
        blocks=normal[:, :n_frame, :n_frame] + np.diag(prior[:n_frame]), banded=smoothing,
        coupling=normal[:, :n_frame, n_frame:],
        shared=normal[:, n_frame:, n_frame:].sum(axis=0) + np.diag(prior[n_frame:]),
        rhs_frames=(gradient[:, :n_frame] - prior[:n_frame] * current
                    - (smoothing @ current.ravel()).reshape(current.shape)),
        rhs_shared=gradient[:, n_frame:].sum(axis=0) - prior[n_frame:] * identity)
    expression_bound, identity_bound = np.split(config.bound_std * basis.std, [basis.n_expression])
    expression = np.clip(expression + step_frames[:, n_camera:], -expression_bound, expression_bound)
    identity = np.clip(identity + step_identity, -identity_bound, identity_bound)
    return (_moved(camera, step_frames[:, :6]) if move_camera else camera), identity, expression


def _normal_equations(basis: _LandmarkBasis, camera: np.ndarray, identity: np.ndarray, expression: np.ndarray,
                      points: np.ndarray, iod: np.ndarray, move_camera: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's J^T J (T, n, n) and J^T r (T, n), linearised a chunk of frames at a time to bound memory."""
    normals, gradients = [], []
    for start in range(0, len(points), _CHUNK_FRAMES):
        part = slice(start, start + _CHUNK_FRAMES)
        residual, jacobian_t = _linearise(basis, camera[part], identity, expression[part], points[part], iod[part],
                                          move_camera)
        normals.append(jacobian_t @ jacobian_t.transpose(0, 2, 1))
        gradients.append((jacobian_t @ residual[..., None])[..., 0])
    return np.concatenate(normals), np.concatenate(gradients)


def _linearise(basis: _LandmarkBasis, camera: np.ndarray, identity: np.ndarray, expression: np.ndarray,
               points: np.ndarray, iod: np.ndarray, move_camera: bool) -> tuple[np.ndarray, np.ndarray]:
    """Residuals (T, 2L) and the transposed Jacobian (T, n, 2L), both in inter-ocular distances. The unknowns
    are the camera (scale, a small turn w applied after R: R X -> R X + w x R X, tx, ty) when it moves, then the
    expression and identity coefficients."""
    frames, landmarks = len(points), len(basis.mean)
    scale, rotation = camera[:, 0], rotation_matrices(camera[:, 1:4])
    rotated = basis.shapes(identity, expression) @ rotation.transpose(0, 2, 1)
    residual = points - scale[:, None, None] * rotated[..., :2] - camera[:, None, 4:6]
    turned = basis.flat.reshape(-1, 3) @ rotation[:, :2].transpose(0, 2, 1)  # every direction through R
    rows = [scale[:, None, None] * turned.reshape(frames, len(basis.flat), 2 * landmarks)]
    if move_camera:
        x, y, z = np.moveaxis(rotated, -1, 0)
        s = scale[:, None]
        moves = np.zeros((frames, 6, landmarks, 2))
        moves[:, 0, :, 0], moves[:, 2, :, 0], moves[:, 3, :, 0], moves[:, 4, :, 0] = x, s * z, -s * y, 1
        moves[:, 0, :, 1], moves[:, 1, :, 1], moves[:, 3, :, 1], moves[:, 5, :, 1] = y, -s * z, s * x, 1
        rows.insert(0, moves.reshape(frames, 6, -1))
    weight = 1.0 / iod[:, None]
    return residual.reshape(frames, -1) * weight, np.concatenate(rows, axis=1) * weight[..., None]


def _moved(camera: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Cameras after a step in (scale, turn w, tx, ty)."""
    turned = Rotation.from_rotvec(step[:, 1:4]).as_matrix() @ rotation_matrices(camera[:, 1:4])
    return _camera(camera[:, 0] + step[:, 0], turned, camera[:, 4:6] + step[:, 4:6])


def _solve_arrow(blocks: np.ndarray, banded: sp.spmatrix, coupling: np.ndarray, shared: np.ndarray,
                 rhs_frames: np.ndarray, rhs_shared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve [[A, C], [C^T, S]] [x; y] = [a; b] where A is ``blocks`` (T, m, m) down the diagonal plus a sparse
    band, by eliminating the per-frame unknowns x first. Kept in time order the band stays narrow, so time and
    memory grow linearly with the frames (about 10 KB a frame)."""
    frames, m = rhs_frames.shape
    flat_coupling = coupling.reshape(frames * m, -1)
    solved = splu((_block_diagonal(blocks) + banded).tocsc(), permc_spec="NATURAL").solve(
        np.column_stack([flat_coupling, rhs_frames.ravel()]))
    shared_solution = np.linalg.solve(shared - flat_coupling.T @ solved[:, :-1],
                                      rhs_shared - flat_coupling.T @ solved[:, -1])
    return (solved[:, -1] - solved[:, :-1] @ shared_solution).reshape(frames, m), shared_solution


def _smooth_camera(camera: np.ndarray, config: FitConfig) -> np.ndarray:
    """Cameras smoothed over time, angles unwrapped first so that a turn through +-180 degrees stays smooth."""
    unwrapped = camera.copy()
    unwrapped[:, 1:4] = np.unwrap(camera[:, 1:4], period=360, axis=0)
    system = sp.identity(len(camera), format="csc") + config.camera_smoothing * second_difference_penalty(len(camera))
    smoothed = splu(system.tocsc(), permc_spec="NATURAL").solve(unwrapped)
    smoothed[:, 1:4] = (smoothed[:, 1:4] + 180) % 360 - 180
    return smoothed


def _block_diagonal(blocks: np.ndarray) -> sp.csc_matrix:
    """A sparse matrix with the (T, K, K) ``blocks`` down its diagonal."""
    frames, k, _ = blocks.shape
    row, col = np.indices((k, k))
    offsets = (np.arange(frames) * k)[:, None, None]
    return sp.csc_matrix((blocks.ravel(), ((offsets + row).ravel(), (offsets + col).ravel())),
                         shape=(frames * k, frames * k))


def second_difference_penalty(n: int) -> sp.csc_matrix:
    """D^T D for the second differences D of a length-``n`` sequence (zero when there are none)."""
    if n < 3:
        return sp.csc_matrix((n, n))
    difference = sp.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n))
    return (difference.T @ difference).tocsc()
