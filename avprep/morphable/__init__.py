"""A 3-D morphable face model on MediaPipe's 468-vertex mesh, its per-frame fit, and NMFC rendering.

    from avprep.morphable import load_default_model, fit_video, posed_vertices, nmfc_colours, render_nmfc

    model = load_default_model()
    for frames, fit in fit_video(model, "prep/videos/<video_id>"):   # one fit per face track
        colours = nmfc_colours(model)
        for k, frame in enumerate(frames):
            vertices = posed_vertices(model, fit.identity, fit.expression[k], fit.camera[k])  # frame pixels
            nmfc = render_nmfc(vertices, model.triangles, colours, size=(height, width))
            # or in the canonical crop: render_nmfc(apply_affine(vertices, align[frame]), ..., size=256)

Modules: ``model`` (the model and its .npz layout), ``topology`` (triangles from MediaPipe's edge list),
``build`` (a model from a prep folder), ``fit`` (cameras and coefficients per track), ``render`` (NMFC images),
``default`` (the shipped basis).

**A better basis from real data.** The shipped basis comes from seven generated speakers. Extract real
talking-face videos (many people, varied expressions and poses) and build from them:

    avprep extract videos/ -o prep/ -j 8
    avprep morphable build prep/ -o basis.npz          # = build_and_save("prep", "basis.npz", 6, 10)

then ``MorphableModel.load("basis.npz")``. Each face track counts as one identity, so identity components are
at most one fewer than the tracks. A BFM or FLAME basis resampled onto the 468 MediaPipe vertices can be saved
in the same layout (see ``avprep.morphable.model``) and used the same way.
"""
from avprep.morphable.build import build_and_save, build_model
from avprep.morphable.default import load_default_model
from avprep.morphable.fit import FitConfig, TrackFit, fit_meshes, fit_track, fit_video, posed_vertices
from avprep.morphable.model import MorphableModel
from avprep.morphable.render import apply_affine, nmfc_colours, render_nmfc

__all__ = ["FitConfig", "MorphableModel", "TrackFit", "apply_affine", "build_and_save", "build_model", "fit_meshes",
           "fit_track", "fit_video", "load_default_model", "nmfc_colours", "posed_vertices", "render_nmfc"]
