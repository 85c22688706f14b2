"""Face analysis on generated media from real faces: landmarks, crops, tracks, mouth, A/V offset, jitter."""
from __future__ import annotations

import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from support import run_cli

from avprep.face.align import apply
from avprep.face.points import eye_centres
from avprep.media.audio import SAMPLE_RATE, decode_audio, read_flac
from avprep.media.encode import write_video
from avprep.media.probe import probe
from avprep.media.video import decode_frames
from avprep.pipeline.config import ExtractConfig, FaceConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import RunOptions, run_extract
from avprep.pipeline.store import PrepDir
from avprep.synth.talking_head import make_talking_head

OFFSETS = [-6, -3, 0, 3, 6]
OFFSET_IDENTITIES = ["astronaut", "hanks", "ross", "chandler", "phoebe"]


def decoded(path: Path) -> tuple[np.ndarray, np.ndarray]:
    info = probe(path)
    frames = np.concatenate([c.frames for c in decode_frames(path, width=info.width, height=info.height, fps=info.fps)])
    return frames, decode_audio(path, info.audio_channels)


def extract_folder(folder: Path, prep: Path, **face) -> dict[str, dict]:
    run_extract(discover([folder]), prep, ExtractConfig(face=FaceConfig(**face)), RunOptions(jobs=2))
    return {Path(r["path"]).stem: r for r in PrepDir(prep).records()}


def video_file(prep: Path, record: dict, name: str) -> Path:
    return prep / "videos" / record["video_id"] / name


def frame_rows(prep: Path, record: dict) -> dict[str, list]:
    return pq.read_table(video_file(prep, record, "frames.parquet")).to_pydict()


def crop(prep: Path, record: dict, index: int) -> np.ndarray:
    with tarfile.open(video_file(prep, record, "crops.tar")) as tar:
        data = tar.extractfile(f"{index:06d}.jpg").read()
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    """Clips with known A/V offsets, two faces, a face that leaves and returns, no face, and a static head."""
    folder = tmp_path_factory.mktemp("scenes")
    truths = {}
    for offset, identity in zip(OFFSETS, OFFSET_IDENTITIES):
        name = f"offset_{offset:+d}"
        truths[name] = make_talking_head(folder / f"{name}.mp4", identity=identity, seconds=4.0,
                                         av_offset_frames=offset, seed=20 + offset)
    work = tmp_path_factory.mktemp("scene_parts")
    big, audio = decoded(folder / "offset_+0.mp4")
    make_talking_head(work / "small.mp4", identity="ross", seconds=4.0, size=(320, 180), seed=7)
    small, _ = decoded(work / "small.mp4")
    two = big.copy()
    two[:, 150:330, 480:640] = small[:, :, 80:240]  # a second, smaller face on the right
    write_video(folder / "two_faces.mp4", two, audio, SAMPLE_RATE, (640, 360), 25)
    background = np.broadcast_to(cv2.GaussianBlur(big[0], (0, 0), 25), big.shape)
    away = big.copy()
    away[40:70] = background[40:70]  # 1.2 s without a face
    write_video(folder / "leave_return.mp4", away, audio, SAMPLE_RATE, (640, 360), 25)
    write_video(folder / "no_face.mp4", background, audio, SAMPLE_RATE, (640, 360), 25)
    truths["static"] = make_talking_head(folder / "static.mp4", identity="astronaut", seconds=3.0, head_motion=0.0,
                                         seed=9)
    prep = tmp_path_factory.mktemp("scenes_prep")
    return prep, extract_folder(folder, prep), truths


def test_av_offsets_imposed_by_the_generator_are_recovered(scenes):
    prep, records, truths = scenes
    for offset in OFFSETS:
        record = records[f"offset_{offset:+d}"]
        assert abs(record["av_offset_frames"] - offset) <= 1, (offset, record["av_offset_frames"])
        assert record["av_offset_confidence"] > 0.3


def test_mouth_opening_follows_the_generated_mouth(scenes):
    prep, records, truths = scenes
    for offset, identity in zip(OFFSETS, OFFSET_IDENTITIES):
        name = f"offset_{offset:+d}"
        measured = np.array(frame_rows(prep, records[name])["mouth_open"])
        r = np.corrcoef(measured, truths[name]["mouth_opening"])[0, 1]
        assert r > 0.8, (identity, r)


def test_two_faces_keep_the_dominant_one(scenes):
    prep, records, _ = scenes
    record = records["two_faces"]
    assert record["status"] == "ok" and record["max_faces"] == 2 and record["n_tracks"] == 1
    landmarks = np.load(video_file(prep, record, "landmarks.npy"))
    left, right = eye_centres(landmarks[:, :, :2])
    assert np.all((left[:, 0] + right[:, 0]) / 2 < 450)  # the big face on the left, not the small one


def test_a_face_that_leaves_and_returns_gives_two_tracks(scenes):
    prep, records, _ = scenes
    record = records["leave_return"]
    assert record["n_tracks"] == 2
    first, second = record["tracks"]
    assert first["start_frame"] == 0 and abs(first["end_frame"] - 39) <= 1
    assert abs(second["start_frame"] - 70) <= 2 and second["end_frame"] == 99
    rows = frame_rows(prep, record)
    assert not any(rows["face"][42:68])  # marked as no face, not filled
    assert np.isnan(np.load(video_file(prep, record, "landmarks.npy"))[42:68]).all()
    score, meshed = np.array(rows["mesh_score"]), np.array(rows["face"]) & ~np.array(rows["interpolated"])
    assert (score[meshed] >= 0.5).all() and (score[meshed] > 0.9).mean() > 0.9  # MediaPipe keeps meshes at >= 0.5
    assert not (score[42:68] >= 0.5).any()  # the face has gone: a low score, or none where no mesh ran


def test_a_video_without_a_face_fails_with_no_face(scenes):
    _, records, _ = scenes
    record = records["no_face"]
    assert (record["status"], record["error_kind"]) == ("failed", "no face")


def test_crops_of_a_static_head_do_not_jitter(scenes):
    prep, records, _ = scenes
    record = records["static"]
    transforms = np.load(video_file(prep, record, "align.npy"))
    size = record["arrays"]["crops"]["size"]
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    in_frame = np.stack([apply(cv2.invertAffineTransform(m.astype(np.float64)), corners) for m in transforms])
    wobble = np.abs(in_frame - in_frame.mean(axis=0)).max()
    assert wobble < 0.5, f"crop corners move by {wobble:.2f} px"


def test_frame_arrays_share_one_time_base(scenes):
    prep, records, _ = scenes
    record = records["offset_+0"]
    n = record["n_frames"]
    for name in ("landmarks_raw", "landmarks", "landmarks68", "align"):
        array = np.load(video_file(prep, record, record["arrays"][name]["file"]), allow_pickle=False)
        assert array.shape[0] == n and array.dtype == np.float32
        assert record["arrays"][name]["fps"] == record["fps"]
    rows = frame_rows(prep, record)
    assert rows["frame"] == list(range(n)) and rows["time_s"][-1] == pytest.approx((n - 1) / 25)
    assert all(rows["good"]) and min(rows["iod_px"]) > 50


def test_fix_offset_shifts_the_stored_audio(scenes, tmp_path):
    prep, records, _ = scenes
    source = Path(records["offset_+6"]["path"])
    fixed = run_extract(discover([source]), tmp_path, ExtractConfig(face=FaceConfig(fix_offset=True)))
    assert fixed.ok == 1
    record = PrepDir(tmp_path).records()[0]
    shift = record["audio_shift_frames"]
    assert abs(shift - 6) <= 1
    original, _ = read_flac(video_file(prep, records["offset_+6"], "audio.flac"))
    moved, _ = read_flac(video_file(tmp_path, record, "audio.flac"))
    samples = shift * SAMPLE_RATE // 25
    assert np.abs(moved[: len(moved) - samples] - original[samples:]).max() < 1e-3


@pytest.fixture(scope="session")
def transformed(tmp_path_factory):
    """One still face under known similarity transforms on a 960x720 canvas: name -> (2x3 transform)."""
    folder = tmp_path_factory.mktemp("transformed")
    make_talking_head(folder / "base.mp4", identity="astronaut", seconds=0.6, head_motion=0.0, mouth_motion=0.0)
    frames, audio = decoded(folder / "base.mp4")
    (folder / "base.mp4").unlink()
    canvas = (960, 720)
    transforms = {}
    for name, angle, scale, shift in [("reference", 0, 1.0, (0, 0)), ("rot+30", 30, 1.0, (60, -40)),
                                      ("rot-30", -30, 1.2, (-80, 30)), ("half", 0, 0.5, (120, 90)),
                                      ("double", 10, 2.0, (0, 40)), ("mixed", -20, 0.7, (-150, -100)),
                                      ("quarter turn", 90, 0.8, (30, 20))]:  # needs the detector's eyes
        about = cv2.getRotationMatrix2D((320, 180), angle, scale)
        about[:, 2] += np.array(canvas) / 2 - (320, 180) + shift  # the frame centre goes to the canvas centre
        transforms[name] = about
        moved = [cv2.warpAffine(frames[0], about, canvas, borderMode=cv2.BORDER_REPLICATE)] * 15
        write_video(folder / f"{name}.mp4", moved, audio, SAMPLE_RATE, canvas, 25)
    prep = tmp_path_factory.mktemp("transformed_prep")
    return prep, extract_folder(folder, prep), transforms


def test_landmarks_are_equivariant_to_similarity_transforms(transformed):
    prep, records, transforms = transformed
    middle = 7
    def back_in_reference(name):
        points = np.load(video_file(prep, records[name], "landmarks.npy"))[middle, :, :2].astype(np.float64)
        to_reference = transforms["reference"] @ np.vstack([cv2.invertAffineTransform(transforms[name]), [0, 0, 1]])
        return apply(to_reference, points)
    reference = back_in_reference("reference")
    left, right = eye_centres(reference)
    iod = np.linalg.norm(right - left)
    for name in transforms:
        error = np.linalg.norm(back_in_reference(name) - reference, axis=1).mean() / iod
        assert error < 0.03, f"{name}: mean landmark error {error:.1%} of the inter-ocular distance"


def test_crops_of_transformed_copies_agree(transformed):
    prep, records, transforms = transformed
    reference = crop(prep, records["reference"], 7).astype(np.float64)
    for name in transforms:
        difference = np.abs(crop(prep, records[name], 7) - reference).mean() / 255
        assert difference < 6 / 255, f"{name}: mean crop difference {difference * 255:.1f}/255"


def test_inspect_draws_a_contact_sheet(scenes, tmp_path):
    prep, records, _ = scenes
    sheet = tmp_path / "sheet.png"
    run_cli("inspect", str(prep), "--video", records["two_faces"]["video_id"], "-o", str(sheet), "--frames", "4")
    image = cv2.imread(str(sheet))
    assert image.shape == (512, 4 * 256, 3) and image.std() > 20
    failed = run_cli("inspect", str(prep), "--video", records["no_face"]["video_id"], "-o", str(sheet), check=False)
    assert failed.returncode == 1 and "no face" in failed.stderr


def test_insightface_backend_without_a_model_pack_says_so(scenes, tmp_path):
    _, records, _ = scenes
    result = run_cli("extract", records["static"]["path"], "-o", str(tmp_path / "prep"),
                     "--insightface-root", str(tmp_path), check=False)
    assert result.returncode == 2 and "no SCRFD detector" in result.stderr
    assert not (tmp_path / "prep").exists()


def test_landmarks_are_read_from_wire_bytes_exactly_and_other_layouts_fall_back():
    from mediapipe.framework.formats import landmark_pb2

    from avprep.face.mesh import landmarks_array

    points = np.random.default_rng(0).normal(size=(478, 3)).astype(np.float32)
    points[7] = 0.0  # zeros are still written on the wire (proto2), so the layout holds
    landmarks = landmark_pb2.NormalizedLandmarkList()
    for x, y, z in points:
        landmarks.landmark.add(x=x, y=y, z=z)
    np.testing.assert_array_equal(landmarks_array(landmarks.SerializeToString()), points)
    landmarks.landmark[3].visibility = 0.9  # a longer record: not the packed layout
    np.testing.assert_array_equal(landmarks_array(landmarks.SerializeToString()), points)


def test_a_video_gets_the_same_landmarks_whatever_the_worker_did_before(tmp_path):
    """Workers keep one MediaPipe graph across videos (it must carry nothing from one face to the next): a
    video's landmarks must not depend on the videos before it."""
    from avprep.face import mesh

    (tmp_path / "videos").mkdir()
    for name, identity, seed in (("a_first", "ross", 3), ("b_second", "astronaut", 4)):
        make_talking_head(tmp_path / "videos" / f"{name}.mp4", identity=identity, seconds=2.0, seed=seed)
    faces_only = ExtractConfig(morphable=False, audio_features=False)
    run_extract(discover([tmp_path / "videos"]), tmp_path / "together", faces_only, RunOptions(jobs=1))
    together = {Path(r["path"]).stem: r for r in PrepDir(tmp_path / "together").records()}  # in order, one process
    mesh._SHARED.__dict__.clear()  # a fresh graph, as a new worker would have
    run_extract(discover([tmp_path / "videos" / "b_second.mp4"]), tmp_path / "alone", faces_only, RunOptions(jobs=1))
    [alone] = PrepDir(tmp_path / "alone").records()
    assert together["b_second"]["face_frames"] == alone["face_frames"] == 50
    for name in ("landmarks_raw.npy", "align.npy"):
        np.testing.assert_array_equal(np.load(video_file(tmp_path / "together", together["b_second"], name)),
                                      np.load(video_file(tmp_path / "alone", alone, name)))


def test_the_mesh_region_moves_with_the_upper_face_and_not_with_the_jaw():
    from avprep.face.mesh import anchor_region, anchored_region, region

    points = np.random.default_rng(0).uniform(100, 200, size=(478, 3))
    anchor = anchor_region(points)
    centre, side, angle = anchored_region(points, anchor)
    np.testing.assert_allclose(centre, region(points)[0])  # where it starts, it is MediaPipe's own region
    assert side == pytest.approx(region(points)[1]) and angle == pytest.approx(region(points)[2])

    jaw_drops = points.copy()
    jaw_drops[152, 1] = 230  # the chin: MediaPipe's rule would grow and lower the region
    assert region(jaw_drops)[1] > 1.2 * side
    np.testing.assert_allclose(anchored_region(jaw_drops, anchor)[0], centre)
    assert anchored_region(jaw_drops, anchor)[1] == pytest.approx(side)

    turn = np.radians(20)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    moved = points.copy()
    moved[:, :2] = 1.5 * (points[:, :2] - 150) @ rotation.T + [300, 200]  # the head turns, nears and moves
    moved_centre, moved_side, moved_angle = anchored_region(moved, anchor)
    np.testing.assert_allclose(moved_centre, 1.5 * (centre - 150) @ rotation.T + [300, 200], atol=1e-6)
    assert moved_side == pytest.approx(1.5 * side)
    assert np.angle(np.exp(1j * (moved_angle - angle - turn))) == pytest.approx(0, abs=1e-9)  # y points down


@pytest.mark.parametrize("scale", [0.45, 0.2])  # one and two pyramid halvings
def test_a_large_face_is_cut_from_the_window_under_its_crop_with_the_whole_frames_pixels(scale):
    """cut halves only the part of the frame under the crop: the pixels must be those of the whole frame halved."""
    from skimage import data

    from avprep.face.align import cut, transform_from_pose

    frame = cv2.resize(data.astronaut(), (1280, 720))
    for centre in ([640, 360], [40, 700], [1300, 300], [-400, -400]):  # inside, at the edges, outside the frame
        transform = transform_from_pose(np.array([*centre, np.log(scale), 0.3]), 256)
        whole = frame
        halved = transform.copy()
        while np.hypot(*halved[0, :2]) < 0.5:
            whole, halved[:, :2] = cv2.pyrDown(whole), halved[:, :2] * 2
        expected = cv2.warpAffine(whole, halved, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        np.testing.assert_array_equal(cut(frame, transform, 256), expected)


def test_a_mesh_rejected_as_a_jump_makes_the_mesher_search_afresh(tmp_path):
    """When the tracker rejects a mesh (its box left the track's box), the mesher must not carry on from those
    landmarks: the next frame is searched afresh around the track's box, and finds the face again."""
    from avprep.face.detect import make_detector
    from avprep.face.mesh import iou, landmark_box
    from avprep.face.track import FaceTracker

    make_talking_head(tmp_path / "clip.mp4", seconds=0.4, size=(640, 360), head_motion=0.0)
    frames, _ = decoded(tmp_path / "clip.mp4")
    tracker = FaceTracker(make_detector(None, 0.5), detect_every=25, max_gap=8)
    first = [tracker.step(i, frames[i]) for i in range(3)]
    assert all(o.points is not None for o in first)
    face_box = tracker.box.copy()
    tracker.box = face_box + np.array([400.0, 250.0, 400.0, 250.0])  # the track's box is elsewhere: a jump
    rejected = tracker.step(3, frames[3])
    assert rejected.points is None and tracker.mesher._previous is None
    tracker.box = face_box  # the track's box is the face again: found afresh there
    found = tracker.step(4, frames[4])
    assert found.points is not None and iou(landmark_box(found.points), face_box) > 0.7
