"""Ear-SR: the official 8 x 8 downsampling against an independent computation; the networks' official parameter
counts (StyleGAN v1 at 128 px and the encoders of networks.py, counted on the meta device), the StyleGAN pieces
against their definitions (fused resampling, progressive-growing blends, style mixing, truncation, the W average,
minibatch standard deviation) and TF's "SAME" padding."""
from __future__ import annotations

from pathlib import Path

import cv2
import insightface
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

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
from avprep.face.still import StillFaces
from avprep.media.images import downsample
from avprep.shard.recipe import load_recipe
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


def parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("build, expected", [
    (Generator, 25_843_858),  # mapping 2,101,248 + synthesis 23,742,610 (methods.md: about 25.84 M)
    (MappingNetwork, 2_101_248),
    (LREncoder, 88_739_712),  # about 88.74 M
    (SpectrogramEncoder, 402_613_120),  # about 402.61 M
    (Fuser, 151_013_376),  # about 151.01 M
    # No reference figure: the official D_basic and HRImageEncoder at their defaults, counted here.
    (Discriminator, 22_941_313),
    (HREncoder, 167_656_256),
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
        full, half = synthesis(w, lod=0.0, fixed_noise=True), synthesis(w, lod=1.0, fixed_noise=True)
        between = synthesis(w, lod=0.5, fixed_noise=True)
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
    assert torch.allclose(discriminator._minibatch_stddev(same), torch.full((4, 1, 4, 4), 1e-4))
    spread = torch.cat([torch.zeros(2, 8, 4, 4), 2 * torch.ones(2, 8, 4, 4)])  # std 1 over each group of 4
    assert torch.allclose(discriminator._minibatch_stddev(spread), torch.ones(4, 1, 4, 4), atol=1e-4)
