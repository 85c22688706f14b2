"""Morphable face model: mesh topology, building from a prep folder, per-frame fitting, NMFC rendering."""
from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from avprep.face.quality import head_pose
from avprep.morphable import (
    MorphableModel,
    apply_affine,
    build_model,
    fit_track,
    fit_video,
    load_default_model,
    nmfc_colours,
    posed_vertices,
    render_nmfc,
)
from avprep.morphable.build import similarity_align
from avprep.morphable.default import DEFAULT_BASIS
from avprep.morphable.fit import project
from avprep.morphable.topology import signed_areas, tesselation_edges
from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import run_extract
from avprep.synth.talking_head import make_talking_head

NOISE_PX = 0.3


@pytest.fixture(scope="module")
def model() -> MorphableModel:
    return load_default_model()


def synthetic_track(model: MorphableModel, rng: np.random.Generator, frames: int, scale: float = 80.0):
    """Known coefficients and cameras for a track: identity within 1 std, expressions oscillating over their
    whole std at their own rates, the head turning up to 20 degrees and drifting."""
    identity = rng.uniform(-1, 1, len(model.identity)) * model.identity_std
    t = np.arange(frames)[:, None]
    expression = np.sin(2 * np.pi * t / rng.uniform(15, 40, len(model.expression))
                        + rng.uniform(0, 6, len(model.expression))) * model.expression_std
    t = t[:, 0]
    camera = np.column_stack([np.full(frames, scale), 10 * np.sin(t / 8), 20 * np.sin(t / 10 + 1), 5 * np.cos(t / 7),
                              320 + t, 180 - t / 2])
    return identity, expression, camera


# --- topology ---------------------------------------------------------------------------------------------------


def test_triangles_are_the_faces_of_mediapipes_edge_graph(model):
    triangles = model.triangles
    assert triangles.shape == (852, 3) and triangles.dtype == np.int32
    assert triangles.min() >= 0 and triangles.max() < 468
    assert all(len(set(t)) == 3 for t in triangles.tolist())
    directed = Counter((int(a), int(b)) for t in triangles for a, b in zip(t, np.roll(t, -1)))
    undirected = {(min(a, b), max(a, b)) for a, b in directed}
    assert undirected == tesselation_edges()  # every edge of the tesselation, and nothing else
    # Consistent winding: no directed edge twice, so the two faces on an interior edge walk it opposite ways.
    assert max(directed.values()) == 1
    boundary = [e for e in directed if e[::-1] not in directed]
    assert len(boundary) == 88  # face outline 36, eyes 16 + 16, inner lips 20
    # A frontal face turns (nearly) all its triangles to the camera: negative signed area in image pixels.
    assert np.mean(signed_areas(model.mean, triangles) < 0) > 0.97


def test_model_saves_and_loads_without_pickle(model, tmp_path):
    model.save(tmp_path / "basis.npz")
    loaded = MorphableModel.load(tmp_path / "basis.npz")
    for name in ("mean", "identity", "expression", "triangles", "landmarks", "identity_std", "expression_std"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    bare = MorphableModel(model.mean, model.identity, model.expression, model.triangles, model.landmarks)
    assert (bare.identity_std == 1).all() and (bare.expression_std == 1).all()  # standardised coefficients


def test_default_basis_is_small_and_canonical(model):
    assert DEFAULT_BASIS.stat().st_size < 2 << 20
    assert model.identity.shape == (6, 468, 3) and model.expression.shape == (10, 468, 3)
    assert np.all(np.diff(model.identity_std) <= 0) and np.all(np.diff(model.expression_std) <= 0)
    np.testing.assert_allclose(head_pose(model.mean.astype(np.float64)), 0, atol=1.0)


# --- building ---------------------------------------------------------------------------------------------------


def write_prep_video(prep, video_id: str, points: np.ndarray, track: np.ndarray, status: str = "ok") -> None:
    """The files of one extracted video that the builder reads: record, landmarks with iris, frame table."""
    folder = prep / "videos" / video_id
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps({"video_id": video_id, "status": status}))
    with_iris = np.concatenate([points, points[:, :10]], axis=1).astype(np.float32)
    np.save(folder / "landmarks.npy", with_iris)
    iod = np.where(track >= 0, 80.0, np.nan)
    pq.write_table(pa.table({"track": track, "iod_px": iod}), folder / "frames.parquet")


def test_build_spans_the_shapes_it_was_built_from(model, tmp_path):
    """Four people with two expressions each, seen in different poses: the built model has three identity
    components (tracks - 1) and reproduces every aligned frame from its bases."""
    rng = np.random.default_rng(3)
    frames = []
    for person in range(4):
        identity, _, camera = synthetic_track(model, rng, 30)
        expression = rng.normal(size=(30, 2)) * model.expression_std[:2]
        shapes = model.shape(identity, np.pad(expression, ((0, 0), (0, 8))))  # only the first two expressions
        posed = project(shapes, camera)
        posed[5] = np.nan  # a frame without a face
        write_prep_video(tmp_path, f"person{person}", posed, np.where(np.arange(30) == 5, -1, 0))
        frames.append(np.delete(shapes, 5, axis=0))
    write_prep_video(tmp_path, "broken", posed, np.zeros(30, np.int64), status="failed")  # skipped, or 4 ids

    built = build_model(tmp_path, n_identity=6, n_expression=4)
    assert len(built.identity) == 3 and len(built.expression) == 4
    aligned = similarity_align(np.concatenate(frames), built.mean) - built.mean
    directions = np.concatenate([built.identity, built.expression]).reshape(7, -1)  # 3 + 4
    coefficients = np.linalg.lstsq(directions.T, aligned.reshape(len(aligned), -1).T, rcond=None)[0]
    leftover = aligned.reshape(len(aligned), -1) - coefficients.T @ directions
    assert np.sqrt((leftover**2).mean()) < 1e-3  # model units, i.e. inter-ocular distances


# --- fitting ----------------------------------------------------------------------------------------------------


def test_fit_recovers_known_coefficients_and_cameras(model):
    """Landmarks made by the model itself with 0.3 px of noise, 80 px between the eyes, 25 frames.

    936 coordinates per frame pin the camera and the shared identity tightly: the angles to a fraction of a degree
    and the identity to a few hundredths of a std. The leading expression (the mouth) moves landmarks by several
    pixels and is recovered to within 0.1 std; the weakest expressions move them by less than the noise, so per
    frame they are only known to within about half a std, but the 3-D shape they make is right to 0.005 of the
    inter-ocular distance. The mean residual is the noise's own (0.3 * sqrt(pi / 2) = 0.376 px).
    """
    rng = np.random.default_rng(0)
    identity, expression, camera = synthetic_track(model, rng, 25)
    points = posed_vertices(model, identity, expression, camera)[..., :2]
    points += rng.normal(scale=NOISE_PX, size=points.shape)
    fit_track(model, points[:3], np.full(3, 80.0))  # first call warms caches; timed below
    started = time.perf_counter()
    fit = fit_track(model, points, np.full(25, 80.0))
    per_frame_ms = (time.perf_counter() - started) / 25 * 1e3

    assert fit.identity.shape == (6,) and fit.expression.shape == (25, 10) and fit.camera.shape == (25, 6)
    assert fit.reprojection_px.mean() < 0.45
    np.testing.assert_allclose(fit.reprojection_iod, fit.reprojection_px / 80.0)
    assert np.abs(fit.identity - identity).max() < 0.1 * model.identity_std.min()
    expression_error = np.sqrt(((fit.expression - expression) ** 2).mean(axis=0)) / model.expression_std
    assert expression_error[0] < 0.1 and expression_error.max() < 0.5, expression_error
    shape_error = np.linalg.norm(model.shape(fit.identity, fit.expression) - model.shape(identity, expression), axis=-1)
    assert np.sqrt((shape_error**2).mean()) < 0.005
    error = np.abs(fit.camera - camera).max(axis=0)
    assert error[0] < 0.2 and error[1:4].max() < 0.5 and error[4:].max() < 0.1, error
    assert per_frame_ms < 10, per_frame_ms  # about 2 ms on one core


def test_a_single_frame_track_fits(model):
    identity, expression, camera = synthetic_track(model, np.random.default_rng(1), 1)
    fit = fit_track(model, posed_vertices(model, identity, expression, camera)[..., :2], [80.0])
    assert fit.reprojection_px[0] < 0.05


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """One generated talking-head clip (2 s, 640x360) extracted into a prep folder."""
    folder = tmp_path_factory.mktemp("morphable_clip")
    make_talking_head(folder / "talk.mp4", identity="ross", seconds=2.0, size=(640, 360), seed=11)
    prep = folder / "prep"
    run_extract(discover([folder / "talk.mp4"]), prep, ExtractConfig())
    return next((prep / "videos").iterdir())


def test_fit_to_extracted_video_reprojects_within_2_percent_of_iod(model, extracted):
    fits = fit_video(model, extracted)
    assert len(fits) == 1
    frames, fit = fits[0]
    assert len(frames) == 50
    assert fit.reprojection_iod.mean() < 0.02, fit.reprojection_iod.mean()
    # The camera's angles read like the head pose extract measured from the same mesh (they agree to about 0.5
    # degrees on generated clips).
    table = pq.read_table(extracted / "frames.parquet", columns=["pitch", "yaw", "roll"])
    pose = np.column_stack([table.column(name).to_numpy() for name in table.column_names])
    assert np.abs(fit.camera[:, 1:4] - pose[frames]).mean(axis=0).max() < 2


def test_nmfc_in_the_canonical_crop_covers_the_face(model, extracted):
    frames, fit = fit_video(model, extracted)[0]
    align = np.load(extracted / "align.npy")
    k = len(frames) // 2
    vertices = apply_affine(posed_vertices(model, fit.identity, fit.expression[k], fit.camera[k]), align[frames[k]])
    image = render_nmfc(vertices, model.triangles, nmfc_colours(model), size=256)
    covered = image.any(axis=-1)
    assert 0.1 < covered.mean() < 0.6
    assert covered[int(0.55 * 256), 128]  # the nose, below the canonical eye line at 0.40 of the height


def test_extract_stores_the_fit_and_a_built_basis_can_replace_the_default(extracted, corpus, tmp_path):
    from support import run_cli

    record = json.loads((extracted / "record.json").read_text())
    assert record["morphable_error_iod"] < 0.02
    n = record["n_frames"]
    assert np.load(extracted / "morphable_camera.npy").shape == (n, 6)
    assert np.load(extracted / "morphable_identity.npy").shape[0] == record["n_tracks"]
    one_track = run_cli("morphable", "build", str(extracted.parent.parent), "-o", str(tmp_path / "x.npz"), check=False)
    assert (one_track.returncode == 1 and "at least two tracks" in one_track.stderr
            and "Traceback" not in one_track.stderr)
    run_cli("extract", str(corpus), "-o", str(tmp_path / "corpus_prep"), "-j", "2", "--no-audio-features")
    basis = tmp_path / "basis.npz"
    run_cli("morphable", "build", str(tmp_path / "corpus_prep"), "-o", str(basis), "--expression", "4")
    assert MorphableModel.load(basis).expression.shape[0] <= 4
    run_cli("extract", record["path"], "-o", str(tmp_path / "prep"), "--morphable-basis", str(basis))
    refit = json.loads(next((tmp_path / "prep" / "videos").glob("*/record.json")).read_text())
    assert refit["arrays"]["morphable_expression"]["shape"][1] <= 4 and refit["morphable_error_iod"] < 0.05


# --- rendering --------------------------------------------------------------------------------------------------

RED_GREEN_BLUE = np.eye(3, dtype=np.float32)


def pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[:size, :size]
    return cols + 0.5, rows + 0.5


def test_a_triangle_covers_its_pixels_with_interpolated_colours():
    # Facing the camera: (b - a) x (c - a) = (0, 10) x (10, 0) < 0 in image pixels.
    vertices = np.array([[2.0, 2.0, 0.0], [2.0, 12.0, 0.0], [12.0, 2.0, 0.0]])
    image = render_nmfc(vertices, [[0, 1, 2]], RED_GREEN_BLUE, size=16)
    x, y = pixel_centres(16)
    inside = (x >= 2) & (y >= 2) & (x + y <= 14)
    np.testing.assert_array_equal(image.any(axis=-1), inside)
    expected = np.stack([1 - (x - 2) / 10 - (y - 2) / 10, (y - 2) / 10, (x - 2) / 10], axis=-1)
    np.testing.assert_allclose(image[inside], expected[inside], atol=1e-5)


def test_a_quad_leaves_no_gap_along_its_diagonal():
    vertices = np.array([[0.0, 0.0, 0.0], [0.0, 16.0, 0.0], [16.0, 16.0, 0.0], [16.0, 0.0, 0.0]])
    image = render_nmfc(vertices, [[0, 1, 2], [0, 2, 3]], np.full((4, 3), 0.5, np.float32), size=16)
    np.testing.assert_array_equal(image, 0.5)


def test_the_nearer_triangle_wins_in_either_order():
    near = np.array([[0.0, 0.0, 1.0], [0.0, 16.0, 1.0], [16.0, 0.0, 1.0]])
    far = near + [0.0, 0.0, 4.0]
    vertices = np.concatenate([near, far])
    colours = np.repeat(RED_GREEN_BLUE[:2], 3, axis=0)  # near red, far green
    for order in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
        image = render_nmfc(vertices, order, colours, size=16)
        drawn = image.any(axis=-1)
        assert drawn.sum() > 100
        np.testing.assert_array_equal(image[drawn], [[1, 0, 0]] * int(drawn.sum()))


def test_a_triangle_turned_away_draws_nothing():
    vertices = np.array([[2.0, 2.0, 0.0], [12.0, 2.0, 0.0], [2.0, 12.0, 0.0]])
    assert not render_nmfc(vertices, [[0, 1, 2]], RED_GREEN_BLUE, size=16).any()


def test_the_whole_face_renders_fast_with_nmfc_colours(model):
    colours = nmfc_colours(model)
    assert colours.min() == 0 and colours.max() == 1
    vertices = posed_vertices(model, np.zeros(6), np.zeros(10), [100.0, 0.0, 15.0, 0.0, 128.0, 128.0])
    render_nmfc(vertices, model.triangles, colours)  # compiled (or loaded from numba's cache) here
    times = []
    for _ in range(20):
        started = time.perf_counter()
        image = render_nmfc(vertices, model.triangles, colours)
        times.append(time.perf_counter() - started)
    assert image.shape == (256, 256, 3) and image.dtype == np.float32
    assert 0.3 < image.any(axis=-1).mean() < 0.8
    assert min(times) < 0.005, min(times)  # about 1 ms; the fastest of 20 so that a busy machine does not fail it
