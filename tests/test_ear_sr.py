"""Ear-SR: the official 8 x 8 downsampling against an independent computation; the networks' official parameter
counts (StyleGAN v1 at 128 px and the encoders of networks.py, counted on the meta device), the StyleGAN pieces
against their definitions (fused resampling, progressive-growing blends, style mixing, truncation, the W average,
minibatch standard deviation) and TF's "SAME" padding."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import insightface
import numpy as np
import pyarrow.parquet as pq
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from support import assert_beside_baselines, avmodels_here, run_avmodels, torchvision_shaped_vgg19

from avmodels import checkpoints
from avmodels.evaluation import training_faces
from avmodels.methods import load_trained
from avmodels.methods.ear_sr import EarSR, PlateauHalving, _reals_at, shrink
from avmodels.methods.ear_sr.networks import (
    Discriminator,
    EqualizedConv2d,
    Fuser,
    Generator,
    HREncoder,
    LREncoder,
    MappingNetwork,
    SameConv,
    SpectrogramEncoder,
)
from avmodels.training.config import load_train_config
from avmodels.training.trainer import StepContext, make_optimizers, train, train_step
from avprep.face.still import StillFaces
from avprep.media.images import downsample
from avprep.shard.recipe import load_recipe
from avprep.shard.run import run_shard
from avprep.shard.sample import still_crop


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0))


def _antialiased_bicubic(image: np.ndarray, size: int) -> np.ndarray:
    """Keys' cubic (a = -0.5) stretched by the shrink factor, each output pixel the normalised weighted sum of
    the input pixels under it; rows, then columns; in float (PIL rounds to 8 bits between the passes)."""
    def along_first_axis(x):
        scale = x.shape[0] / size
        rows = []
        for i in range(size):
            centre = (i + 0.5) * scale
            taps = np.arange(max(int(centre - 2 * scale + 0.5), 0), min(int(centre + 2 * scale + 0.5), x.shape[0]))
            weights = _cubic((taps - centre + 0.5) / scale)
            rows.append(np.tensordot(weights / weights.sum(), x[taps], axes=1))
        return np.stack(rows)
    return along_first_axis(along_first_axis(image.astype(np.float64)).swapaxes(0, 1)).swapaxes(0, 1)


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    """128 px Ear-SR crops of real faces: scikit-image's astronaut and insightface's Tom Hanks."""
    images = [skimage.data.astronaut(),
              cv2.cvtColor(cv2.imread(str(Path(insightface.__file__).parent / "data/images/Tom_Hanks_54745.png")),
                           cv2.COLOR_BGR2RGB)]
    with StillFaces() as mesh:
        return [still_crop(image, mesh(image), load_recipe("ear_sr"))[0] for image in images]


def test_the_low_resolution_input_is_the_officials_antialiased_bicubic(faces):
    for face in faces:
        low = downsample(face, 8)
        values = face.astype(np.float64)  # scipy's byte scaling: min..max to 0..255
        stretched = np.floor((values - values.min()) * 255 / (values.max() - values.min()) + 0.5)
        expected = _antialiased_bicubic(stretched, 8)
        assert low.shape == (8, 8, 3) and np.abs(low - expected).mean() < 0.5 and np.abs(low - expected).max() < 4
        # the differentiable copy for the downsampling-consistency term: torch's antialiased bicubic, the same
        torched = F.interpolate(torch.from_numpy(stretched).permute(2, 0, 1)[None], size=8, mode="bicubic",
                                antialias=True)[0].permute(1, 2, 0).numpy()
        assert np.abs(torched - low).mean() < 0.5
        assert np.abs(downsample(face, 8, "bicubic").astype(float) - low).mean() > 10  # OpenCV's is not it


def test_the_downsampling_consistency_shrinks_as_the_inputs_were_made_even_on_a_dim_face(faces):
    """The 8 x 8 inputs are byte-stretched before the bicubic: a dim, low-contrast face gives the same 8 x 8 input
    as a bright one, and the differentiable ``shrink`` must agree with it (review #13: 16.5 grey levels apart
    without the stretch)."""
    for face in faces:
        dim = (face.astype(np.float64) * 0.5 + 40).astype(np.uint8)
        shrunk = shrink(torch.from_numpy(dim).permute(2, 0, 1)[None].float() / 127.5 - 1, 8)
        shrunk = ((shrunk[0].permute(1, 2, 0) + 1) * 127.5).numpy()
        assert np.abs(shrunk - downsample(dim, 8)).mean() < 1.0
        plain = shrink(torch.from_numpy(dim).permute(2, 0, 1)[None].float() / 127.5 - 1, 8, stretch=False)
        assert np.abs(((plain[0].permute(1, 2, 0) + 1) * 127.5).numpy() - downsample(dim, 8)).mean() > 10


def parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("build, expected", [
    (Generator, 25_843_858),  # mapping 2,101,248 + synthesis 23,742,610 (methods.md: about 25.84 M)
    (MappingNetwork, 2_101_248),
    (LREncoder, 88_744_192),  # about 88.74 M, instance norm with its scale and shift
    (SpectrogramEncoder, 402_613_120),  # about 402.61 M
    (Fuser, 151_013_376),  # about 151.01 M
    # No reference figure: the official D_basic and HRImageEncoder at their defaults, counted here.
    (Discriminator, 22_941_313),
    (HREncoder, 167_662_144),
], ids=["generator", "mapping", "E_l", "E_a", "F", "discriminator", "E_h"])
def test_the_official_parameter_counts(build, expected):
    with torch.device("meta"):
        assert parameters(build()) == expected


def test_the_shapes_at_a_small_width():
    torch.manual_seed(0)
    generator, discriminator = Generator(width=0.125), Discriminator(width=0.125)
    images = generator(torch.randn(4, 512), mixing=0.9)
    assert images.shape == (4, 3, 128, 128) and discriminator(images).shape == (4,)
    for encoder, inputs in ((HREncoder(width=0.125), torch.randn(2, 3, 128, 128)),
                            (LREncoder(width=0.125), torch.randn(2, 3, 8, 8)),
                            (SpectrogramEncoder(width=0.125), torch.randn(2, 1, 257, 257))):
        assert encoder(inputs).shape == (2, 12, 512)
    from_lr = torch.randn(2, 12, 512)
    fuser = Fuser(width=0.125)
    torch.nn.init.zeros_(fuser.layers[2].weight)
    assert torch.equal(fuser(from_lr, torch.randn(2, 12, 512)), from_lr)  # a residual on E_l's latents


def test_fused_resampling_is_nearest_upsampling_or_average_pooling_around_the_convolution():
    torch.manual_seed(0)
    up = EqualizedConv2d(4, 5, 3, bias=False, resample="up")
    x = torch.randn(2, 4, 8, 8)
    expected = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), up.weight * up.scale, padding=1)
    assert torch.allclose(up(x), expected, atol=1e-5)
    down = EqualizedConv2d(4, 5, 3, resample="down")
    x = torch.randn(2, 4, 16, 16)
    expected = F.avg_pool2d(F.conv2d(x, down.weight * down.scale, down.bias, padding=1), 2)
    assert torch.allclose(down(x), expected, atol=1e-5)


def test_tf_same_padding_puts_the_extra_pixel_right_and_below():
    conv = SameConv(1, 1, 4, 1, norm=False)
    torch.nn.init.zeros_(conv.conv.weight)
    conv.conv.weight.data[0, 0, 0, 0] = 1  # the kernel's top-left tap: output (i, j) reads input (i - 1, j - 1)
    x = torch.rand(1, 1, 6, 6)
    out = conv(x)
    assert out.shape == x.shape and torch.equal(out[..., 1:, 1:], x[..., :-1, :-1]) and out[..., 0, :].eq(0).all()
    assert SameConv(1, 1, 4, 2, norm=False)(torch.rand(1, 1, 257, 257)).shape[-1] == 129


def test_progressive_growing_blends_in_the_lower_resolution_output():
    torch.manual_seed(0)
    synthesis = Generator(width=0.125).synthesis.eval()
    w = torch.randn(1, 12, 512)
    with torch.no_grad():
        full, half = synthesis(w, lod=0.0, noise="fixed"), synthesis(w, lod=1.0, noise="fixed")
        between = synthesis(w, lod=0.5, noise="fixed")
    assert torch.equal(half[..., ::2, ::2], half[..., 1::2, 1::2])  # 64 px drawn at 128 (nearest)
    assert torch.allclose(between, (full + half) / 2, atol=1e-5) and not torch.allclose(full, half)


def test_style_mixing_truncation_and_the_average_w():
    torch.manual_seed(0)
    generator = Generator(width=0.125)
    z = torch.randn(3, 512)
    with torch.no_grad():
        w = generator.mapping(z)
        plain = generator.styles(z)
        assert torch.equal(plain, w[:, None].expand(-1, 12, -1))
        mixed = generator.styles(z, mixing=1.0)
        cutoff = int((mixed[0] == w[0]).all(dim=1).sum())
        assert 1 <= cutoff < 12 and torch.equal(mixed[:, :cutoff], plain[:, :cutoff])
        assert not torch.isclose(mixed[:, cutoff:], plain[:, cutoff:]).all(dim=-1).any()
        generator.styles(z, track_average=True)
        assert torch.allclose(generator.w_average, 0.005 * w.mean(dim=0), atol=1e-6)
        truncated = generator.styles(z, truncation=0.0)
        assert torch.allclose(truncated[:, :8], generator.w_average.expand(3, 8, -1))
        assert torch.equal(truncated[:, 8:], plain[:, 8:])


def test_minibatch_standard_deviation_adds_one_feature_of_the_groups_spread():
    discriminator = Discriminator(width=0.125)
    same = torch.ones(4, 8, 4, 4)
    assert torch.allclose(discriminator._minibatch_stddev(same, 4), torch.full((4, 1, 4, 4), 1e-4))
    spread = torch.cat([torch.zeros(2, 8, 4, 4), 2 * torch.ones(2, 8, 4, 4)])  # std 1 over each group of 4
    assert torch.allclose(discriminator._minibatch_stddev(spread, 4), torch.ones(4, 1, 4, 4), atol=1e-4)
    reals_then_fakes = torch.cat([same, spread])  # two minibatches in one pass: never mixed
    assert torch.allclose(discriminator._minibatch_stddev(reals_then_fakes, 4)[:4], torch.full((4, 1, 4, 4), 1e-4))


# The method's stylegan stage: progressive growing, reals as the generator draws them, R1, the moving average.

SMALL = ["model.width=0.125", "train.num_workers=1", "train.log_every=1", "train.sample_every=2",
         "train.checkpoint_every=2", "train.batch_size=2", "train.stages.stylegan.steps=2"]


def test_progressive_growing_follows_the_official_schedule():
    method = EarSR({"width": 0.125}, {})
    assert method.lod(0) == 4.0  # 8 px of 128
    assert method.lod(599_000) == 4.0 and method.lod(900_000) == pytest.approx(3.5)  # training, then fading
    assert method.lod(1_200_000) == 3.0 and method.lod(4 * 1_200_000) == 0.0 and method.lod(1e9) == 0.0


def test_reals_are_shown_at_the_resolution_being_grown():
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(_reals_at(images, 0.0), images)
    half = _reals_at(images, 1.0)
    assert torch.allclose(half[..., ::2, ::2], F.avg_pool2d(images, 2))
    assert torch.equal(half[..., ::2, :], half[..., 1::2, :])
    assert torch.allclose(_reals_at(images, 0.25), torch.lerp(images, half, 0.25))


@pytest.mark.parametrize("lod", [1.5, 2.25, 3.99])
def test_reals_fade_between_the_resolution_grown_and_half_of_it_in_every_transition(lod):
    """Official ``process_reals``: the reals at the resolution floor(lod) leaves, lerped with that image 2x pooled,
    by lod's fraction; not only in the last transition (review #4)."""
    images = torch.rand(2, 3, 32, 32)
    factor = 2 ** int(lod)
    current = F.avg_pool2d(images, factor)
    half = F.interpolate(F.avg_pool2d(current, 2), scale_factor=2, mode="nearest")
    expected = F.interpolate(torch.lerp(current, half, lod % 1), scale_factor=factor, mode="nearest")
    assert torch.allclose(_reals_at(images, lod), expected, atol=1e-6)
    assert not torch.allclose(_reals_at(images, lod), _reals_at(images, float(int(lod))), atol=1e-3)


def test_the_encoders_latents_are_z_each_mapped_to_its_style():
    """Official ``get_images``: each of the 12 latents goes through the mapping network (pixel norm, 8 dense
    layers) before synthesis, so scaling a latent changes nothing and the mapping is trained with the encoders."""
    torch.manual_seed(0)
    generator = Generator(width=0.125).eval()
    z = torch.randn(2, 12, 512)
    with torch.no_grad():
        drawn = generator(z_plus=z, noise="off")
        styles = torch.stack([generator.mapping(z[:, i]) for i in range(12)], dim=1)
        assert torch.allclose(drawn, generator.synthesis(styles, noise="off"), atol=1e-4)
        assert torch.allclose(generator(z_plus=3 * z, noise="off"), drawn, atol=1e-4)  # pixel norm first
    method = EarSR({"width": 0.125}, {})
    nets, batch = method.networks, {"hr": torch.rand(2, 3, 128, 128) * 2 - 1}
    nets["generator_ema"].requires_grad_(True)
    out = method.forward(nets, batch, StepContext("invert_joint", 1, 1, 0))
    total, _ = method.loss("inversion", nets, batch, out, {"reconstruction": 1.0, "perceptual": 1.0},
                           StepContext("invert_joint", 1, 1, 0))
    total.backward()
    assert all(p.grad is not None for p in nets["generator_ema"].mapping.parameters())


def test_every_trained_parameter_takes_part_in_each_step_as_ddp_needs():
    """At every lod the discriminator calls each FromRGB (weight 0 where unused), and with noise off the
    generator's noise weights stay in the graph (review #8)."""
    torch.manual_seed(0)
    generator, discriminator = Generator(width=0.125), Discriminator(width=0.125)
    for lod in (0.0, 1.5, 4.0):
        discriminator.zero_grad(set_to_none=True)
        discriminator(torch.randn(4, 3, 128, 128), lod=lod).sum().backward()
        assert all(p.grad is not None for p in discriminator.parameters()), lod
    generator(z_plus=torch.randn(2, 12, 512), noise="off").sum().backward()
    assert all(p.grad is not None for p in generator.parameters())


def _stylegan_parts(r1_every: int = 1):
    torch.manual_seed(0)
    method = EarSR({"width": 0.125, "r1_every": r1_every, "lod_training_kimg": 0, "lod_transition_kimg": 0}, {})
    batch = {"hr": torch.rand(4, 3, 128, 128) * 2 - 1}
    return method, method.networks, batch


def test_r1_is_the_squared_gradient_on_reals_and_can_be_lazy():
    method, nets, batch = _stylegan_parts(r1_every=2)
    for step, expected in ((0, True), (1, False)):
        ctx = StepContext("stylegan", step, step, 0)
        out = method.forward(nets, batch, ctx)
        assert out["lod"] == 0.0
        total, terms = method.loss("discriminator", nets, batch, out, {"r1": 10.0}, ctx)
        assert ("r1" in terms) == expected
        if expected:
            real = out["real"].detach().requires_grad_(True)
            [gradient] = torch.autograd.grad(nets["discriminator"](real).sum(), real)
            assert terms["r1"] == pytest.approx(gradient.pow(2).flatten(1).sum(1).mean().item(), rel=1e-4)
            expected_total = terms["d_real"] + terms["d_fake"] + 10 / 2 * 2 * terms["r1"]  # gamma / 2 x k
            assert total.item() == pytest.approx(expected_total, rel=1e-4)


def test_the_moving_average_generator_has_a_half_life_of_ten_thousand_images():
    method, nets, batch = _stylegan_parts()
    before = {k: v.clone() for k, v in nets["generator_ema"].state_dict().items()}
    with torch.no_grad():
        for parameter in nets["generator"].parameters():
            parameter.add_(1.0)
    method.after_step(nets, batch, StepContext("stylegan", 0, 0, 0))
    beta = 0.5 ** (4 / 10_000)
    name = "synthesis.conv_4.weight"
    expected = beta * before[name] + (1 - beta) * nets["generator"].state_dict()[name]
    assert torch.allclose(nets["generator_ema"].state_dict()[name], expected, atol=1e-6)


def test_the_discriminator_learns_to_tell_a_fixed_batch_from_the_generator(tmp_path):
    method, nets, batch = _stylegan_parts()
    config = load_train_config("ear_sr", overrides=SMALL)
    optimizers, schedulers = make_optimizers(config.stages[0], nets)
    losses = []
    for step in range(8):
        _, terms = train_step(method, nets, nets, batch, config.stages[0], optimizers, schedulers,
                              StepContext("stylegan", step, step, 0))
        losses.append(terms["d_real"] + terms["d_fake"])
    assert losses[-1] < 0.7 * losses[0], losses


def test_a_stage_can_read_several_splits_joined_by_plus(tmp_path):
    from avmodels.data import shard_urls
    from avprep.shard.folder import ShardDir

    info = {"splits": {"train_a": {"shards": ["train_a-000000.tar"], "samples": 3},
                       "train_b": {"shards": ["train_b-000000.tar", "train_b-000001.tar"], "samples": 5}}}
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    assert [Path(url).name for url in shard_urls(tmp_path, "train_a+train_b")] == [
        "train_a-000000.tar", "train_b-000000.tar", "train_b-000001.tar"]
    assert ShardDir(tmp_path).samples("train_a+train_b") == 8 and ShardDir(tmp_path).samples("train_b") == 5
    with pytest.raises(ValueError, match="'train' is not one of"):
        shard_urls(tmp_path, "train_a+train")


# The encoder stages: the plateau rule, losses falling on a fixed batch, the VGG setting, all stages from shards.

def test_the_regulariser_weight_halves_when_the_loss_stops_improving():
    rule = PlateauHalving(1.0, patience=3, smoothing=0.0)
    for loss in (1.0, 0.9, 0.8):
        rule.update(loss)
    assert rule.weight.item() == 1.0
    for loss in (0.8, 0.8, 0.799):  # less than 1% better: no progress
        rule.update(loss)
    assert rule.weight.item() == 0.5
    assert set(rule.state_dict()) == {"weight", "smoothed", "best", "waited"}  # checkpointed with the networks


def _fixed_batch(faces) -> dict:
    hr = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 127.5 - 1
    lr = torch.from_numpy(np.stack([downsample(face, 8) for face in faces])).permute(0, 3, 1, 2).float() / 127.5 - 1
    return {"hr": hr, "lr": lr, "spectrogram": torch.rand(len(faces), 1, 257, 257) * 2 - 1}


@pytest.mark.parametrize("stage, rate", [("invert", 1e-4), ("encoders_lr", 1e-4), ("encoders_audio", 2e-4),
                                         ("fuse", 1e-4)])  # the recipe's rates; E_a's 2x
def test_each_encoder_stage_fits_a_fixed_batch(faces, stage, rate):
    torch.manual_seed(0)
    config = load_train_config("ear_sr", overrides=[*SMALL, 'model.vgg19=""'])
    spec = next(s for s in config.stages if s.name == stage)
    spec = dataclasses.replace(spec, optimizers=tuple(dataclasses.replace(o, lr=rate) for o in spec.optimizers))
    method = EarSR(config.model, {})
    nets, batch = method.networks, _fixed_batch(faces)
    for name, net in nets.items():
        net.train(name in spec.networks).requires_grad_(name in spec.networks)
    optimizers, schedulers = make_optimizers(spec, nets)
    losses = []
    for step in range(16):
        _, terms = train_step(method, nets, nets, batch, spec, optimizers, schedulers,
                              StepContext(stage, step, step, 0))
        losses.append(sum(spec.losses[name] * value for name, value in terms.items()))  # the stage's objective
    assert losses[-1] < 0.7 * losses[0], losses


def small_recipe():
    """Ear-SR's recipe for the test corpus (3 speakers of 2 videos): a speaker in each of train_a, train_b and
    test (the open set), and one video of each training speaker in test_closed (the closed set)."""
    return load_recipe("ear_sr", ["split.fractions={train_a = 0.25, train_b = 0.25, test = 0.25, test_closed = 0.25}"])


@pytest.fixture(scope="module")
def shards(shards_for) -> Path:
    return shards_for("ear_sr", fractions=small_recipe().fractions)


def test_a_closed_set_test_is_named_against_its_speakers_training_faces(shards):
    info = json.loads((shards / "dataset.json").read_text())
    training = [row["speaker"] for row in pq.read_table(shards / "index.parquet").to_pylist()
                if row["split"] in ("train_a", "train_b")]
    closed = {info["speakers"].index(row["speaker"]) for row in pq.read_table(shards / "index.parquet").to_pylist()
              if row["split"] == "test_closed"}
    assert len(closed) == 2 and {info["speakers"][s] for s in closed} == set(training)
    view = EarSR.view
    faces, speakers = training_faces(shards, view, "hr", limit=100, speakers=closed, per_speaker=1, spectrogram=False)
    assert faces.shape == (2, 128, 128, 3) and faces.dtype == np.uint8 and sorted(speakers.tolist()) == sorted(closed)
    faces, speakers = training_faces(shards, view, "hr", limit=100, speakers={min(closed)}, per_speaker=16)
    assert set(speakers.tolist()) == {min(closed)} and len(speakers) == training.count(info["speakers"][min(closed)])


ALL_STAGES = [*SMALL, "train.stages.invert.steps=1", "train.stages.invert_joint.steps=2",
              "train.stages.encoders_lr.steps=1", "train.stages.encoders_audio.steps=1", "train.stages.fuse.steps=1"]


def test_the_inversion_needs_vgg19_weights_or_an_explicit_empty_setting(shards, tmp_path):
    with pytest.raises(ValueError, match='set model.vgg19 = "vgg19.pth"'):
        train(load_train_config("ear_sr", overrides=ALL_STAGES), shards, tmp_path / "refused", device="cpu",
              start_stage="invert")
    torch.save(torchvision_shaped_vgg19(), tmp_path / "vgg19.pth")
    config = load_train_config("ear_sr", overrides=[*ALL_STAGES, f'model.vgg19="{tmp_path / "vgg19.pth"}"'])
    train(config, shards, tmp_path / "vgg", device="cpu", start_stage="invert", max_steps=1)
    row = json.loads((tmp_path / "vgg" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["stage"] == "invert" and row["perceptual"] > 0


@pytest.fixture(scope="module")
def trained(trained_for) -> Path:
    """All six stages at width 0.125 without the VGG term, 1 or 2 steps each (the session's run): what the
    checkpoint, sampling and evaluation tests read."""
    return trained_for("ear_sr")


def test_invert_joint_holds_the_generator_near_where_the_stage_found_it(trained):
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [row["stage"] for row in rows] == ["stylegan"] * 2 + ["invert", "invert_joint", "invert_joint",
                                                                 "encoders_lr", "encoders_audio", "fuse"]
    assert rows[3]["regulariser"] == 0 < rows[4]["regulariser"]  # exactly the snapshot at the stage's first step


def test_checkpoints_leave_out_the_networks_a_stage_file_or_the_seed_already_holds(shards, trained, tmp_path):
    """A later stage's checkpoint carries what it trains, not the 3.6 GB of frozen networks again (at full size);
    loading puts them back from the stage file beside it, or checks they are as the seed builds them."""
    raw = torch.load(trained / "checkpoint.pt", weights_only=True)  # at the end of fuse
    assert set(raw["networks"]) == {"fuser", "audio_encoder"}
    assert {where for name, (where, _) in raw["kept"].items()} == {"stage-encoders_audio.pt"}
    complete, loaded = checkpoints.load(trained / "stage-fuse.pt"), checkpoints.load(trained / "checkpoint.pt")
    assert complete["networks"].keys() == loaded["networks"].keys()
    assert all(torch.equal(value, loaded["networks"][name][key])
               for name, state in complete["networks"].items() for key, value in state.items())
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "checkpoint.pt").write_bytes((trained / "checkpoint.pt").read_bytes())
    with pytest.raises(FileNotFoundError, match="keeps .* in stage-encoders_audio.pt beside it, which is missing"):
        checkpoints.load(tmp_path / "alone" / "checkpoint.pt")
    (tmp_path / "alone" / "stage-encoders_audio.pt").write_bytes((trained / "stage-invert.pt").read_bytes())
    with pytest.raises(ValueError, match="keeps .* in stage-encoders_audio.pt beside it, which has changed"):
        checkpoints.load(tmp_path / "alone" / "checkpoint.pt")  # e.g. that stage trained again since

    run = tmp_path / "first"  # inside the first stage no stage file exists: untouched networks are kept as built
    train(load_train_config("ear_sr", overrides=[*SMALL, 'model.vgg19=""']), shards, run, device="cpu", max_steps=1)
    raw = torch.load(run / "checkpoint.pt", weights_only=True)
    assert set(raw["networks"]) == {"generator", "generator_ema", "discriminator"}
    assert {raw["kept"][name][0] for name in ("lr_encoder", "audio_encoder", "fuser")} == {"initial"}
    method, nets, _ = load_trained(run / "checkpoint.pt")  # built from the recipe's seed: they match
    assert set(nets) == set(raw["kept"])
    torch.manual_seed(1)
    with pytest.raises(ValueError, match="keeps .* as first built from the run's seed, and this build differs"):
        checkpoints.load_networks(EarSR({"width": 0.125}, {}).networks, checkpoints.load(run / "checkpoint.pt"))


def test_sample_draws_the_papers_figure_row(trained, prep, tmp_path):
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    speech = next((prep / "videos").iterdir()) / "audio.flac"
    checkpoint = str(trained / "checkpoint.pt")
    result = avmodels_here("sample", "-c", checkpoint, "--lr", str(photo), "--audio", str(speech), "-o",
                           str(tmp_path / "sr.png"))
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "sr.png")).shape == (128, 4 * 128 + 3 * 2, 3)  # face | 8 x 8 | E_l | fused
    cv2.imwrite(str(tmp_path / "lr.png"), cv2.cvtColor(downsample(skimage.data.astronaut(), 8), cv2.COLOR_RGB2BGR))
    result = avmodels_here("sample", "-c", checkpoint, "--lr", str(tmp_path / "lr.png"), "-o", str(tmp_path / "x.png"))
    assert result.exit_code == 0 and cv2.imread(str(tmp_path / "x.png")).shape == (128, 2 * 128 + 2, 3)
    refused = avmodels_here("sample", "-c", checkpoint, "--audio", str(speech), "-o", str(tmp_path / "y.png"))
    assert refused.exit_code == 2 and "give --lr" in refused.output


@pytest.mark.slow  # dlib on every face; the quick start evaluates too
def test_eval_reports_identity_psnr_and_ssim_beside_e_l_alone_and_bicubic(trained, shards, tmp_path):
    result = run_avmodels("eval", "-m", "ear_sr", "-d", str(shards), "-c", str(trained / "checkpoint.pt"),
                          "-o", str(tmp_path / "eval.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert "*_lr_only" in scores["protocols"]  # which protocol each number follows (review #6)
    assert_beside_baselines(scores, "ear_sr")  # bicubic upsampling
    assert scores["identity_accuracy_real"] == 1.0  # the real faces name their own speaker
    for suffix in ("", "_lr_only", "_baseline"):
        assert 0 <= scores["identity_accuracy" + suffix] <= 1 and 0 < scores["psnr" + suffix] < 100
        assert -1 <= scores["ssim" + suffix] <= 1
    assert scores["psnr_baseline"] > scores["psnr"]  # a few steps of training: bicubic is still closer
    picture = cv2.imread(str(tmp_path / "eval.png"))
    assert picture.shape[0] == 7 * 128 + 6 * 2  # real, 8 x 8, bicubic, E_l, fused, mixed voices, the voices' faces
    assert scores["set"] == "open" and scores["identity_gallery_faces"] == scores["samples"]
    result = run_avmodels("eval", "-m", "ear_sr", "-d", str(shards), "-c", str(trained / "checkpoint.pt"),
                          "--split", "test_closed", "-o", str(tmp_path / "closed.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    closed = json.loads((tmp_path / "closed.json").read_text())
    assert closed["set"] == "closed" and closed["speakers_in_split"] == 2 and closed["identity_gallery_faces"] > 0
    assert closed["identity_accuracy_real"] >= 0.9  # held-out videos named by the same speakers' training faces


@pytest.mark.slow  # its own extract: the default run's time goes to the core tests
def test_eval_probes_gender_and_age_where_the_meta_csv_gave_them(corpus, trained, tmp_path):
    from support import run_cli

    rows = ["video_id,gender"] + [f"{clip.parent.name}-{clip.stem},{'f' if clip.stem.endswith('0') else 'm'}"
                                  for clip in sorted(corpus.glob("*/*.mp4"))]  # an attribute per clip
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    run_cli("extract", str(corpus), "-o", str(tmp_path / "prep"), "-j", "2", "--meta", str(tmp_path / "meta.csv"))
    run_shard(tmp_path / "prep", tmp_path / "shards", load_recipe("ear_sr", [  # both clips of a speaker in training
        "split.by=speaker", "split.fractions={train_a = 0.34, train_b = 0.33, test = 0.33}"]))
    result = run_avmodels("eval", "-m", "ear_sr", "-d", str(tmp_path / "shards"), "-c", str(trained / "checkpoint.pt"),
                          "--limit", "8", "-o", str(tmp_path / "eval.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    scores = json.loads((tmp_path / "eval.json").read_text())
    for suffix in ("_real", "", "_lr_only", "_baseline"):
        assert 0 <= scores["gender_accuracy" + suffix] <= 1
    assert not any(name.startswith("age_") for name in scores)  # no age column: no age probe
