"""HeadGAN: the networks' official parameter counts and forward shapes, the warp, the official init, the VGG19 of
the perceptual loss loaded from a torchvision-shaped file; then the method's training: one generator step per
NMFC window, the discriminators every 4, the curriculum, the VGG setting, losses falling; the
reenactment geometry (the driver's motion drawn with the reference's identity), sampling and evaluation."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import skimage.data
import torch
from support import assert_beside_baselines, run_avmodels, torchvision_shaped_vgg19

from avmodels import checkpoints
from avmodels.data import split_batches
from avmodels.losses import load_vgg19, perceptual_loss
from avmodels.methods import get_method
from avmodels.methods.headgan import HeadGAN
from avmodels.methods.headgan.networks import (
    FlowNetwork,
    Generator,
    MultiscaleDiscriminator,
    RenderingNetwork,
    init_weights,
    warp,
)
from avmodels.methods.headgan.reenact import adapted_cameras, driven_nmfc
from avmodels.training.config import load_train_config
from avmodels.training.trainer import StepContext, make_optimizers, train, train_step
from avprep.face.still import StillFaces
from avprep.media.audio import decode_audio
from avprep.media.probe import probe
from avprep.morphable import load_default_model
from avprep.pipeline.store import PrepDir
from avprep.shard.recipe import load_recipe
from avprep.shard.run import run_shard
from avprep.shard.sample import still_crop


def parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("build, expected", [
    (FlowNetwork, 30_606_179),
    (RenderingNetwork, 21_144_323),
    (Generator, 51_750_502),
    (lambda: Generator(audio=False), 45_908_134),
    (lambda: MultiscaleDiscriminator(3 + 3), 5_537_410),  # NMFC + image
    (lambda: MultiscaleDiscriminator(300 + 3), 6_145_666),  # tiled audio features + mouth crop
], ids=["flow", "rendering", "generator", "generator-without-audio", "image-D", "mouth-D"])
def test_the_official_parameter_counts(build, expected):
    with torch.device("meta"):
        assert parameters(build()) == expected


def test_the_forward_shapes_at_a_small_width():
    torch.manual_seed(0)
    generator = Generator(width=0.125)
    nmfc, reference, audio = torch.rand(2, 9, 64, 64), torch.rand(2, 6, 64, 64) * 2 - 1, torch.randn(2, 300)
    frame, warped, flow, mask = generator(nmfc, reference, audio)
    assert frame.shape == warped.shape == (2, 3, 64, 64) and flow.shape == (2, 2, 64, 64)
    assert mask.shape == (2, 1, 64, 64) and 0 <= mask.min() and mask.max() <= 1 and frame.abs().max() <= 1
    scales = MultiscaleDiscriminator(6, width=0.125)(torch.cat([nmfc[:, 6:], frame], 1))
    assert len(scales) == 2 and len(scales[0]) == 5 and scales[0][-1].shape[1] == 1
    assert scales[1][-1].shape[-1] < scales[0][-1].shape[-1]  # the second scale sees the input at half size
    frame.mean().backward()
    assert all(p.grad is not None for p in generator.rendering_network.audio.parameters())


def test_warp_moves_pixels_by_the_flow_and_clamps_at_the_borders():
    image = torch.arange(5 * 6, dtype=torch.float32).view(1, 1, 5, 6)
    assert torch.allclose(warp(image, torch.zeros(1, 2, 5, 6)), image)
    right = torch.zeros(1, 2, 5, 6)
    right[:, 0] = 1  # sample one pixel to the right
    shifted = warp(image, right)
    assert torch.allclose(shifted[..., :-1], image[..., 1:]) and torch.allclose(shifted[..., -1], image[..., -1])
    half = torch.zeros(1, 2, 5, 6)
    half[:, 1] = 0.5
    assert torch.allclose(warp(image, half)[..., :-1, :], (image[..., :-1, :] + image[..., 1:, :]) / 2)


def test_the_official_init_leaves_spectral_norm_layers_at_the_default():
    torch.manual_seed(0)
    network = RenderingNetwork(width=0.125)
    before = network.encoder[1][0][0].parametrizations.weight.original.clone()
    init_weights(network)
    assert torch.equal(network.encoder[1][0][0].parametrizations.weight.original, before)
    spade = network.decoder[0].norm_0.gamma
    assert spade.weight.std() < 0.01 and spade.bias.abs().max() == 0  # Xavier normal, gain 0.02


def test_vgg19_loads_from_a_torchvision_state_dict_and_refuses_pickles_and_other_networks(tmp_path):
    state = torchvision_shaped_vgg19()
    torch.save(state, tmp_path / "vgg19.pth")
    vgg = load_vgg19(str(tmp_path / "vgg19.pth"))
    assert torch.equal(vgg.features[28].weight, state["features.28.weight"])
    assert not any(p.requires_grad for p in vgg.parameters())
    activations = vgg(torch.rand(1, 3, 64, 64))
    assert [a.shape[1] for a in activations] == [64, 128, 256, 512, 512]
    fake = torch.rand(1, 3, 64, 64, requires_grad=True)
    loss = perceptual_loss(vgg, fake, torch.rand(1, 3, 64, 64))
    loss.backward()
    assert loss > 0 and fake.grad is not None
    torch.save({"model": argparse.Namespace(weights=1)}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="not a plain state dict"):
        load_vgg19(str(tmp_path / "pickled.pth"))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a torchvision VGG19 state dict"):
        load_vgg19(str(tmp_path / "other.pth"))
    with pytest.raises(FileNotFoundError, match="model.vgg19: no file at"):
        load_vgg19(str(tmp_path / "absent.pth"))


# The method: micro-batches per NMFC window, D once per 4 G steps, the VGG19 setting, losses falling, resume.

SMALL = ["model.width=0.125", 'model.vgg19=""', "train.num_workers=1", "train.log_every=1", "train.sample_every=2",
         "train.checkpoint_every=2", "train.batch_size=2", "train.stages.gan.steps=2"]


@pytest.fixture(scope="module")
def shards(shards_for) -> Path:
    """HeadGAN shards of the test corpus: 6-frame clips with NMFC renders, mouth centres and a reference."""
    return shards_for("headgan", split_by="video", fractions=(("train", 0.5), ("test", 0.5)), max_count=8)


def test_the_curriculum_doubles_the_sequences_from_the_third_epoch():
    method = HeadGAN({"width": 0.125}, {"speakers": ["a"]})
    assert [method.sequence_length(epoch, 48) for epoch in range(6)] == [6, 6, 12, 24, 48, 48]
    assert method.sequence_length(4, 4) == 4  # never more windows than the clip holds


def test_a_clip_gives_t_generator_steps_from_t_plus_2_frames_at_a_random_start():
    """The official loader reads n_frames_total + 2 frames from a random offset, so T = 6 generator steps in the
    first epochs (review #12: here 4, always from frame 0, before)."""
    method = HeadGAN({"width": 0.125}, {"speakers": ["a"]})
    clips, frames = 3, 12
    index = torch.arange(frames, dtype=torch.float32)[None, :, None, None, None].expand(clips, -1, 3, 4, 4)
    batch = {"frames": index, "nmfc": index, "audio_features": index[:, :, 0, 0, :1].expand(-1, -1, 300),
             "mouth": index[:, :, 0, 0, :2], "reference": torch.zeros(clips, 3, 4, 4),
             "reference_nmfc": torch.zeros(clips, 3, 4, 4)}
    torch.manual_seed(0)
    starts = set()
    for _ in range(10):
        parts = method.micro_batches(batch, StepContext("gan", 0, 0, 0))
        assert len(parts) == 6
        shown = torch.stack([part["real"][:, 0, 0, 0] for part in parts], dim=1)  # (clips, 6) frame numbers
        assert torch.equal(shown - shown[:, :1], torch.arange(6.0).expand(clips, -1))  # consecutive targets
        assert torch.equal(parts[0]["audio"][:, 0], shown[:, 0]) and torch.equal(parts[0]["mouth"][:, 0], shown[:, 0])
        starts.update((shown[:, 0] - 2).tolist())
    assert starts == {0.0, 1.0, 2.0, 3.0, 4.0}  # every start that leaves 8 frames, for each clip on its own


@pytest.fixture(scope="module")
def trained(trained_for) -> Path:
    """Two loaded batches of 6-frame clips at width 0.125, VGG off (the session's run): what the micro-step,
    sampling and evaluation tests read."""
    return trained_for("headgan")


def test_each_window_of_three_nmfc_frames_is_a_generator_step_and_d_steps_every_fourth(trained):
    saved = checkpoints.load(trained / "checkpoint.pt")
    assert saved["step"] == 2 and saved["micro_step"] == 2 * (6 - 2)  # T = 4 windows from a 6-frame clip
    adam_steps = lambda name: int(next(iter(saved["optimizers"][name]["state"].values()))["step"])  # noqa: E731
    assert adam_steps("generator") == 8 and adam_steps("discriminators") == 2  # rounds 0 and 4
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert {"g_masked_l1", "g_flow_mask", "g_mouth_adversarial", "d_mouth_real"} <= set(rows[0])
    assert "g_vgg" not in rows[0]  # model.vgg19 = "": the VGG terms are off


def test_training_needs_vgg19_weights_or_an_explicit_empty_setting(shards, tmp_path):
    without = load_train_config("headgan", overrides=[s for s in SMALL if "vgg19" not in s])
    with pytest.raises(ValueError, match='set model.vgg19 = "vgg19.pth"'):
        train(without, shards, tmp_path / "refused", device="cpu")
    torch.save(torchvision_shaped_vgg19(), tmp_path / "vgg19.pth")
    with_vgg = load_train_config("headgan", overrides=[*SMALL, f'model.vgg19="{tmp_path / "vgg19.pth"}"',
                                                      "train.stages.gan.steps=1", "train.batch_size=1"])
    train(with_vgg, shards, tmp_path / "vgg", device="cpu")
    row = json.loads((tmp_path / "vgg" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["g_vgg"] > 0
    assert not any("vgg" in name for name in checkpoints.load(tmp_path / "vgg" / "checkpoint.pt")["networks"])


def test_the_generator_fits_a_fixed_batch(shards):
    config = load_train_config("headgan", overrides=SMALL)
    stage = config.stages[0]
    torch.manual_seed(0)
    method = HeadGAN(config.model, {"speakers": ["a"]})
    method.load_auxiliary("cpu")
    batch = next(split_batches(shards, "train", get_method("headgan").view, "cpu", batch_size=2))
    optimizers, schedulers = make_optimizers(stage, method.networks)
    errors = []
    for step in range(5):  # the masked L1 to about 0.52 of the first round's here
        ctx = StepContext(stage.name, step, step, 0, micro_step=4 * step)
        for i, part in enumerate(method.micro_batches(batch, ctx)):
            _, losses = train_step(method, method.networks, method.networks, part, stage, optimizers, schedulers,
                                   dataclasses.replace(ctx, micro_step=4 * step + i))
            errors.append(losses["g_masked_l1"])
    assert sum(errors[-4:]) / 4 < 0.7 * sum(errors[:4]) / 4, errors[::4]


# Reenactment: the driver's motion with the reference's identity; sampling and evaluation.

def test_driver_cameras_take_the_references_size_and_place_and_keep_their_rotations():
    reference = np.array([2.0, 0, 0, 0, 100.0, 120.0])
    driver = np.array([[1.0, 5, -10, 2, 40.0 + k, 50.0] for k in range(30)])  # half the size, elsewhere, drifting
    adapted = adapted_cameras(driver, reference)
    assert np.allclose(adapted[:, 0], 2.0) and np.array_equal(adapted[:, 1:4], driver[:, 1:4])
    assert np.allclose(adapted[:, 4:].mean(axis=0), reference[4:], atol=1.0)  # the mean place is the reference's
    assert np.all(np.diff(adapted[10:20, 4]) > 0)  # the drift goes on, smoothed, at twice the pixels (twice the size)
    assert np.allclose(adapted_cameras(np.repeat(reference[None], 4, 0), reference), reference)


@pytest.fixture(scope="module")
def astronaut_mesh() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut photo's face as HeadGAN's recipe crops it, and its mesh in crop pixels."""
    image = skimage.data.astronaut()
    with StillFaces() as faces:
        return still_crop(image, faces(image), load_recipe("headgan"))


def test_a_driver_that_is_the_reference_moved_and_shrunk_renders_as_the_reference(astronaut_mesh):
    _, mesh = astronaut_mesh
    driver = np.repeat(mesh[None].astype(np.float64), 5, 0)
    driver[..., :2] = driver[..., :2] * 0.7 + (20, -10)
    driver[2] = np.nan  # a frame without a face takes its neighbour's
    reference_nmfc, nmfc = driven_nmfc(load_default_model(), mesh, driver, 256)
    face = reference_nmfc.sum(-1) > 0
    assert nmfc.shape == (5, 256, 256, 3) and 0.15 < face.mean() < 0.8
    for frame in nmfc:
        drawn = frame.sum(-1) > 0
        assert (face & drawn).sum() / (face | drawn).sum() > 0.97
        assert np.abs(frame - reference_nmfc)[face & drawn].mean() < 0.02


@pytest.mark.slow  # extracts the driver with pocketsphinx; the quick start samples the same way by default
def test_sample_reenacts_a_photo_with_the_drivers_motion_and_voice(trained, prep, tmp_path):
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    driving = PrepDir(prep).records()[-1]["path"]
    out = tmp_path / "driven.mp4"
    result = run_avmodels("sample", "-c", str(trained / "checkpoint.pt"), "--reference", str(photo),
                          "--driving", driving, "-o", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    video, seconds = probe(out), len(decode_audio(driving, 1)) / 16000
    assert (video.width, video.height, video.audio_codec) == (256, 256, "aac")
    assert abs(video.n_packets / video.fps - seconds) <= 1 / video.fps
    assert abs(len(decode_audio(out, 1)) / 16000 - seconds) <= 1 / video.fps
    missing = run_avmodels("sample", "-c", str(trained / "checkpoint.pt"), "--reference", str(photo),
                           "-o", str(tmp_path / "x.mp4"))
    assert missing.returncode == 2 and "give --driving" in missing.stdout


@pytest.fixture(scope="module")
def trained_on_faces(shards, tmp_path_factory) -> Path:
    """Two steps on the test corpus's real faces: enough for dlib to find a face in what the generator draws
    (after two steps on synthetic pictures it finds none, and AKD has nothing to compare)."""
    run = tmp_path_factory.mktemp("headgan_faces")
    train(load_train_config("headgan", overrides=SMALL), shards, run, device="cpu")
    return run


@pytest.mark.slow  # meshes, fits and MP4s per clip; the quick start evaluates too
def test_eval_scores_self_reenactment_beside_the_reference_held_still_and_writes_videos(trained_on_faces, shards,
                                                                                    tmp_path):
    trained = trained_on_faces
    result = run_avmodels("eval", "-m", "headgan", "-d", str(shards), "-c", str(trained / "checkpoint.pt"),
                          "--limit", "3", "-o", str(tmp_path / "eval.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert "akd" in scores["protocols"]  # which protocol each number follows (review #6)
    for suffix in ("", "_baseline"):
        assert 0 < scores["l1" + suffix] < 255 and 0 < scores["psnr" + suffix] < 100
        assert 0 <= scores["ssim" + suffix] <= 1 and scores["akd" + suffix] >= 0 and scores["aed" + suffix] >= 0
    assert scores["l1_baseline"] < scores["l1"]  # two steps of training: the still reference is still closer
    assert_beside_baselines(scores, "headgan")
    assert 0.9 < scores["identity_similarity_real"] <= 1
    assert scores["samples"] == 3
    videos = {path.name for path in (tmp_path / "eval").glob("*.mp4")}
    assert len([name for name in videos if not name.startswith("cross-")]) == 2
    for name in videos:
        video = probe(tmp_path / "eval" / name)
        assert (video.width, video.height, video.audio_codec) == ((3 if name.startswith("cross-") else 2) * 256, 256,
                                                                  "aac")


def test_the_reference_can_come_from_another_video_of_the_same_speaker(prep, tmp_path):
    import tarfile

    run_shard(prep, tmp_path, dataclasses.replace(load_recipe("headgan"), reference_from="speaker"), max_count=16)
    videos = {r["video_id"]: r["speaker"] for r in PrepDir(prep).records()}
    metas = []
    for shard in tmp_path.glob("*.tar"):
        with tarfile.open(shard) as tar:
            metas += [json.load(tar.extractfile(m)) for m in tar if m.name.endswith(".meta.json")]
    assert len(metas) == len(pq.read_table(tmp_path / "index.parquet"))
    for meta in metas:
        assert meta["reference_video_id"] != meta["video_id"]
        assert videos[meta["reference_video_id"]] == meta["speaker"]
