"""HeadGAN's networks: the official parameter counts, the shapes of the official forward passes, the warp, the
official init, and the VGG19 of the perceptual loss loaded from a torchvision-shaped file."""
from __future__ import annotations

import argparse

import pytest
import torch

from avmodels.methods.headgan.networks import (
    FlowNetwork,
    Generator,
    MultiscaleDiscriminator,
    RenderingNetwork,
    VGG19Features,
    init_weights,
    load_vgg19,
    perceptual_loss,
    warp,
)


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


def torchvision_shaped_vgg19() -> dict:
    """A state dict with torchvision's vgg19 keys and shapes (random values: the loader, not the weights, is
    under test), classifier included."""
    torch.manual_seed(1)
    state = {f"features.{key}": value for key, value in VGG19Features().features.state_dict().items()}
    for index, channels in ((30, 512), (32, 512), (34, 512)):
        state[f"features.{index}.weight"] = torch.randn(channels, 512, 3, 3)
        state[f"features.{index}.bias"] = torch.randn(channels)
    state["classifier.0.weight"], state["classifier.0.bias"] = torch.randn(8, 8), torch.randn(8)
    return state


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
