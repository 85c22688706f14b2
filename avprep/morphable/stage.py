"""The morphable-model stage of extract: per-track 3DMM fits stored next to the landmarks they explain.

Written per video (N = frames; NaN rows for frames without a face):

    morphable_expression.npy  (N, K_exp)  expression coefficients per frame
    morphable_camera.npy      (N, 6)      weak-perspective camera: scale, pitch, yaw, roll (degrees), tx, ty
    morphable_identity.npy    (tracks, K_id) identity coefficients, one row per face track (record "tracks")
    morphable_error.npy       (N, 2)      reprojection error: pixels, and fraction of the inter-ocular distance

Expression plus camera are HeadGAN's per-frame geometry; the shard step renders NMFC images from them.
"""
from __future__ import annotations

import functools

import numpy as np

from avprep.morphable.default import load_default_model
from avprep.morphable.fit import fit_video
from avprep.morphable.model import MorphableModel
from avprep.pipeline.stages import Stage, VideoContext


@functools.cache
def basis(path: str | None) -> MorphableModel:
    """The model of ``path`` (None: the shipped default), loaded once per process."""
    return load_default_model() if path is None else MorphableModel.load(path)


class MorphableStage(Stage):
    name = "morphable"

    def close(self, video: VideoContext) -> None:
        model = basis(video.config.morphable_basis)
        n = video.record["n_frames"]
        expression = np.full((n, model.expression.shape[0]), np.nan, np.float32)
        camera = np.full((n, 6), np.nan, np.float32)
        error = np.full((n, 2), np.nan, np.float32)
        identities = []
        for frames, fit in fit_video(model, video.workdir):
            expression[frames], camera[frames] = fit.expression, fit.camera
            error[frames] = np.stack([fit.reprojection_px, fit.reprojection_iod], axis=1)
            identities.append(fit.identity)
        outputs = {"morphable_expression": expression, "morphable_camera": camera,
                   "morphable_identity": np.asarray(identities, np.float32), "morphable_error": error}
        for name, values in outputs.items():
            np.save(video.workdir / f"{name}.npy", values)
            video.arrays[name] = {"file": f"{name}.npy", "fps": video.fps, "start_s": 0.0,
                                  "shape": list(values.shape)}
        video.arrays["morphable_identity"]["rows"] = "face tracks, in record['tracks'] order"
        video.record["morphable_error_iod"] = float(np.nanmean(error[:, 1]))
        video.record["morphable_basis"] = video.config.morphable_basis  # None: the shipped default
