"""What `avmodels sample` feeds a method: inputs prepared as the shards prepared them, and its MP4s."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from avmodels.sampling import InputProblem, SampleInputs, prepare_driving, prepare_lr, prepare_reference
from avprep.face import align
from avprep.media.encode import write_video
from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import run_extract
from avprep.shard.recipe import load_recipe
from avprep.shard.sample import PrepVideo, placements, recipe_crop
from avprep.synth.speech import synth_speech


@pytest.fixture(scope="module")
def photo_and_still_video(tmp_path_factory):
    """scikit-image's astronaut photo, and a 0.6 s still video of it extracted by avprep."""
    folder = tmp_path_factory.mktemp("still")
    photo = skimage.data.astronaut()
    cv2.imwrite(str(folder / "photo.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    speech, _ = synth_speech(0.6, 16000, 0, f0_hz=120.0)
    (folder / "videos").mkdir()
    write_video(folder / "videos" / "still.mp4", [photo] * 15, speech, 16000, (512, 512), 25)
    prep = folder / "prep"
    run_extract(discover([folder / "videos"]), prep, ExtractConfig(morphable=False, audio_features=False))
    return folder / "photo.png", PrepVideo(prep, "still")


@pytest.mark.parametrize("recipe", ["atvgnet", "davs", "ear_sr"])
def test_a_reference_photo_is_cropped_as_the_shards_crop_its_video(photo_and_still_video, recipe):
    photo, video = photo_and_still_video
    recipe = load_recipe(recipe)
    reference = prepare_reference(photo, recipe)
    [placement] = placements(video, [7], recipe)  # Ear-SR's: the window's axis-aligned square, as the shards'
    stored = recipe_crop(video, 7, recipe, placement if recipe.crop_mode != "frame" else None)
    assert reference.image.shape == stored.shape == (recipe.image_size, recipe.image_size, 3)
    assert np.abs(reference.image.astype(float) - stored).mean() < 6  # JPEG crops and one-frame vs smoothed fits
    expected = align.apply(placement, np.asarray(video.array("landmarks68")[7], float))
    assert np.abs(reference.landmarks68 - expected).mean() < 0.01 * recipe.image_size


def test_an_lr_face_is_taken_as_is_or_cropped_and_downsampled(photo_and_still_video, tmp_path):
    photo, _ = photo_and_still_video
    recipe = load_recipe("ear_sr")
    low, face = prepare_lr(photo, recipe)
    assert low.shape == (8, 8, 3) and face.shape == (128, 128, 3)  # the crop it came from, for the grid
    cv2.imwrite(str(tmp_path / "lr.png"), cv2.cvtColor(low, cv2.COLOR_RGB2BGR))
    again, none = prepare_lr(tmp_path / "lr.png", recipe)
    assert np.array_equal(again, low) and none is None


def test_a_photo_without_a_face_is_refused_with_the_reason(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "noise.png"), noise)
    with pytest.raises(InputProblem, match="no face found"):
        prepare_reference(tmp_path / "noise.png", load_recipe("atvgnet"))


def test_a_driving_video_is_analysed_by_extracts_own_pipeline(corpus, tmp_path):
    driving = prepare_driving(corpus / "hanks" / "clip00.mp4", tmp_path)
    assert driving.record["status"] == "ok" and driving.record["n_frames"] == 50
    assert driving.array("landmarks68").shape == (50, 68, 2)
    assert recipe_crop(driving, 10, load_recipe("davs")).shape == (256, 256, 3)
    # driven at a model's rate, not the driver's (issue 27): its 2 s at 25 fps as 50 and as 12.5 frames a second,
    # each output frame the driver's frame nearest its time; as long as the audio when that is shorter
    audio = np.zeros(2 * 16000, np.float32)
    for rate, expected in ((50.0, [k // 2 + k % 2 for k in range(100)]), (12.5, [2 * k for k in range(25)])):
        frames = SampleInputs(fps=rate, audio=audio, driving=driving).driving_frames()
        assert frames == [min(f, 49) for f in expected], rate
    assert len(SampleInputs(fps=50.0, audio=audio[:16000], driving=driving).driving_frames()) == 50
    with pytest.raises(InputProblem, match="not a video"):
        (tmp_path / "notes.mp4").write_text("not a video at all")
        prepare_driving(tmp_path / "notes.mp4", tmp_path / "other")


def test_long_work_shows_a_progress_bar_on_stderr(capsys):
    """eval's samples and sampling's frames (issue 27: a long reenactment printed nothing for minutes)."""
    from avmodels.progress import tracked

    assert list(tracked(range(3), 3, "reenacting 3 frames")) == [0, 1, 2]
    shown = capsys.readouterr()
    assert "reenacting 3 frames" in shown.err and "3/3" in shown.err and shown.out == ""
