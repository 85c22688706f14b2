"""avmodels.metrics: each measure pinned to an independent computation, on real faces from the test corpus."""
from __future__ import annotations

import importlib.util
import tarfile

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from avmodels import metrics
from avmodels.metrics import faces
from avprep.face.points import mouth_opening
from avprep.face.sync import shift_audio
from avprep.media.audio import SAMPLE_RATE, read_flac
from avprep.pipeline.store import PrepDir


def crops(prep, video_id: str) -> np.ndarray:
    """Every canonical face crop extract stored for a video, (N, 256, 256, 3) uint8 RGB."""
    with tarfile.open(prep / "videos" / video_id / "crops.tar") as tar:
        return np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(tar.extractfile(m).read(), np.uint8),
                                                   cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for m in tar])


@pytest.fixture(scope="module")
def faces_by_speaker(prep) -> dict[str, np.ndarray]:
    """speaker -> the crops of one of its videos."""
    chosen = {}
    for record in PrepDir(prep).records():
        chosen.setdefault(record["speaker"], record["video_id"])
    return {speaker: crops(prep, video) for speaker, video in sorted(chosen.items())}


def noisy(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def test_psnr_and_ssim_match_scikit_image(faces_by_speaker):
    rng = np.random.default_rng(0)
    real = next(iter(faces_by_speaker.values()))[:3]
    fake = noisy(rng, real, 12.0)
    for a, b in zip(real, fake):
        assert metrics.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), rel=1e-9)
        assert metrics.ssim(a, b) == pytest.approx(structural_similarity(a, b, channel_axis=-1, data_range=255))
    expected = np.mean([peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(real, fake)])
    assert metrics.psnr(real, fake) == pytest.approx(expected)  # a clip: the mean over frames
    small = cv2.resize(real[0], (128, 128), interpolation=cv2.INTER_AREA)
    assert metrics.ssim(small, small) == pytest.approx(1.0)
    assert metrics.psnr(real[0], real[0]) == np.inf


def test_the_releases_psnr_is_grey_at_256_px_with_uint8_wraparound():
    """Review #6: ATVGnet's published PSNR resizes to 256, converts to grey, then squares uint8 differences."""
    a = np.full((64, 64, 3), 10, np.uint8)
    b = np.full((64, 64, 3), 30, np.uint8)  # 10 - 30 wraps to 236 in uint8, and 236 ** 2 wraps to 144
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 400))
    assert metrics.psnr_release(a, b) == pytest.approx(10 * np.log10(255**2 / 144))
    red, green = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)
    red[..., 0], green[..., 1] = 200, 100  # grey 60 and 59 (BT.601): nearly equal in grey, far apart in colour
    assert metrics.psnr_release(red, green) > 45 > metrics.psnr(red, green)
    assert metrics.psnr_release(a, a) == 100.0


def test_lmd_sums_the_centred_mouth_distances_and_averages_frames():
    rng = np.random.default_rng(1)
    real = rng.uniform(0, 128, (5, 68, 2))
    moved = real.copy()
    moved[:, :48] += 7.0  # outside the mouth: ignored
    moved[:, 48:] += (2.0, -3.0)  # the whole mouth shifted: centring removes it
    assert metrics.lmd(real, moved) == pytest.approx(0.0, abs=1e-9)
    moved[:, 57, 1] += 4.0  # one mouth point 4 px down: after centring 0.95 x 4 for it and 0.05 x 4 for 19 others
    assert metrics.lmd(real, moved) == pytest.approx(0.95 * 4 + 19 * 0.05 * 4)
    assert metrics.lmd(real, moved, per_point=True) == pytest.approx((0.95 * 4 + 19 * 0.05 * 4) / 20)
    moved[2] = np.nan  # a frame without a face is left out
    assert metrics.lmd(real, moved) == pytest.approx(7.6)


def test_akd_averages_every_point_distance_without_centring():
    rng = np.random.default_rng(3)
    real = rng.uniform(0, 128, (4, 68, 2))
    moved = real + (3.0, 4.0)  # the whole face 5 px away: counts in full
    assert metrics.akd(real, moved) == pytest.approx(5.0)
    moved[1] = np.nan  # a frame without a face is left out
    assert metrics.akd(real, moved) == pytest.approx(5.0) and np.isnan(metrics.akd(real[:1], moved[1:2]))


def test_aed_tells_expressions_apart_whatever_the_faces_place_and_size(faces_by_speaker):
    frames = next(iter(faces_by_speaker.values()))
    meshes = metrics.face_meshes(frames)
    assert np.isfinite(meshes).all() and meshes.shape == (len(frames), 478, 3)
    order = np.argsort(mouth_opening(meshes))
    closed, opened = meshes[order[:5]], meshes[order[-5:]]
    moved = closed.copy()
    moved[..., :2] = moved[..., :2] * 0.8 + 10  # the same faces smaller and elsewhere
    assert metrics.aed(closed, closed) == 0 and metrics.aed(closed, moved) < 1e-4
    assert metrics.aed(closed, opened) > 0.05  # in standard deviations of the expression components
    assert np.isnan(metrics.aed(closed, np.full_like(closed, np.nan)))


def test_cpbd_is_higher_for_sharper_images_and_falls_with_blur(faces_by_speaker):
    face = next(iter(faces_by_speaker.values()))[0]
    scores = [metrics.cpbd(cv2.GaussianBlur(face, (0, 0), sigma) if sigma else face) for sigma in (0, 0.6, 1.2, 2.4)]
    assert scores[0] > 0.05 and all(a > b for a, b in zip(scores, scores[1:]) if a > 0), scores
    stripes = np.zeros((128, 128, 3), np.uint8)
    for x in range(0, 128, 32):
        stripes[:, x:x + 16] = 200
    assert metrics.cpbd(stripes) == 1.0 and metrics.cpbd(cv2.GaussianBlur(stripes, (0, 0), 1.5)) < 0.1


def test_dlib_finds_real_faces_and_nothing_in_noise(faces_by_speaker):
    real = np.concatenate([images[::10] for images in faces_by_speaker.values()])
    noise = np.random.default_rng(2).integers(0, 256, (6, 256, 256, 3), dtype=np.uint8)
    assert metrics.dlib_detectability(real) == 1.0 and metrics.face_detectability(real) == 1.0
    assert metrics.dlib_detectability(noise) == 0.0 and metrics.face_detectability(noise) == 0.0
    points = metrics.landmarks68(np.concatenate([real[:2], noise[:1]]))
    assert np.isfinite(points[:2]).all() and np.isnan(points[2]).all()


def test_dlib_and_mediapipe_landmarks_agree_on_real_faces(faces_by_speaker):
    real = np.stack([images[0] for images in faces_by_speaker.values()])
    dlib_points, mesh_points = metrics.landmarks68(real), metrics.landmarks68(real, detector="mediapipe")
    eyes = np.linalg.norm(dlib_points[:, 36:42].mean(1) - dlib_points[:, 42:48].mean(1), axis=1)
    error = np.linalg.norm(dlib_points - mesh_points, axis=2).mean(axis=1) / eyes
    assert (error < 0.12).all(), error  # the two annotate the jaw line differently; within an eighth of the IOD


def test_identity_similarity_is_higher_for_one_person_than_for_two(faces_by_speaker):
    people = list(faces_by_speaker.values())
    same = metrics.identity_similarity(people[0][:1], people[0][-1:])
    different = metrics.identity_similarity(people[0][:1], people[1][:1])
    assert same > different and same > 0.9, (same, different)
    gallery = np.concatenate([images[:3] for images in people])
    names = np.repeat(list(faces_by_speaker), 3)
    probes = np.concatenate([images[-2:] for images in people])
    assert metrics.identity_accuracy(probes, np.repeat(list(faces_by_speaker), 2), gallery, names) == 1.0


def test_the_sync_measure_recovers_a_shift_of_the_audio(prep):
    record = next(r for r in PrepDir(prep).records())
    frames = crops(prep, record["video_id"])
    audio, _ = read_flac(prep / "videos" / record["video_id"] / "audio.flac")
    assert metrics.sync_offset(frames, audio, record["fps"])[0] == 0
    late = shift_audio(audio, -3, SAMPLE_RATE, record["fps"])  # the sound now comes 3 frames after the mouth
    offset, confidence = metrics.sync_offset(frames, late, record["fps"])
    assert offset == 3 and confidence > 0.3


def test_missing_face_models_are_named(monkeypatch):
    faces.dlib_models.cache_clear()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "face_recognition_models" else real_find_spec(name, *args))
    with pytest.raises(metrics.MissingModels, match="pip install face_recognition_models"):
        metrics.dlib_detectability(np.zeros((1, 64, 64, 3), np.uint8))
    faces.dlib_models.cache_clear()


def test_image_measures_take_one_image_as_a_batch_of_one_and_refuse_wrong_shapes():
    """Issue 27: a single H x W x 3 face is a batch of one; a float or grey array is one clear error, not NaN."""
    import skimage.data

    face = skimage.data.astronaut()[:256, 100:356]
    assert metrics.landmarks68(face).shape == (1, 68, 2) and np.isfinite(metrics.landmarks68(face)).all()
    assert metrics.dlib_detectability(face) == 1.0 and metrics.face_detectability(face) == 1.0
    assert metrics.identity_similarity(face, face) == pytest.approx(1.0)
    for wrong in (face.astype(np.float32), face[..., 0]):
        with pytest.raises(ValueError, match="expected uint8 RGB images"):
            metrics.dlib_detectability(wrong)
    with pytest.raises(ValueError, match="compares pairs: got 2 and 1"):
        metrics.identity_similarity(np.stack([face, face]), face)


def test_each_baseline_gets_the_description_of_its_longest_prefix_or_is_refused():
    from avmodels.evaluation import described_baselines, headline

    metrics = described_baselines({"lmd": 20.0, "lmd_baseline": 27.8, "word_accuracy_audio_baseline": 0.1},
                                  {"": "held still", "word_accuracy": "chance"})
    assert metrics["baselines"] == {"lmd_baseline": "held still", "word_accuracy_audio_baseline": "chance"}
    assert headline(metrics, ["lmd", "psnr"]) == "lmd 20 (baseline 27.8)"  # a measure not reported is left out
    with pytest.raises(ValueError, match="lmd_baseline: a baseline without a description"):
        described_baselines({"lmd_baseline": 27.8}, {"word_accuracy": "chance"})
