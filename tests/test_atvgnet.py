"""ATVGnet's networks: the official parameter counts, shapes, and the ConvGRU against torch's GRU."""
from __future__ import annotations

import pytest
import torch

from avmodels.methods.atvgnet.networks import ATNet, ConvGRU, GLDiscriminator, VGNet

OFFICIAL = {ATNet: 30_071_750, VGNet: 58_355_781, GLDiscriminator: 21_491_473 - 594_568}


def parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("network", list(OFFICIAL), ids=lambda n: n.__name__)
def test_default_networks_have_the_official_parameter_counts(network):
    with torch.device("meta"):  # counted without allocating a byte
        assert parameters(network()) == OFFICIAL[network]


def test_shapes_at_a_small_width():
    torch.manual_seed(0)
    assert ATNet()(torch.randn(2, 6), torch.randn(2, 16, 28, 12)).shape == (2, 16, 6)
    generator, discriminator = VGNet(image_size=64, width=8), GLDiscriminator(image_size=64, width=8)
    reference, landmarks = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 5, 136) * 2 - 1
    frames, attention, colour, landmark_attention = generator(reference, landmarks, landmarks[:, 0])
    assert frames.shape == colour.shape == (2, 5, 3, 64, 64) and attention.shape == (2, 5, 1, 64, 64)
    assert landmark_attention.shape == (2, 5, 1, 16, 16)
    assert frames.abs().max() <= 1 and 0 <= attention.min() and attention.max() <= 1
    logit, regressed = discriminator(frames, landmarks[:, 0])
    assert logit.shape == (2,) and regressed.shape == (2, 5, 136)


def test_the_official_batch_recurrence_is_a_switch_and_differs_from_recurrence_in_time():
    torch.manual_seed(0)
    paper = VGNet(image_size=64, width=8).eval()
    official = VGNet(image_size=64, width=8, recur_over="batch").eval()
    official.load_state_dict(paper.state_dict())
    inputs = torch.rand(3, 3, 64, 64) * 2 - 1, torch.rand(3, 4, 136) * 2 - 1, torch.rand(3, 136) * 2 - 1
    with torch.no_grad():
        assert not torch.allclose(paper(*inputs)[0], official(*inputs)[0])
        # the first clip's first frame sees a zero state either way
        assert torch.allclose(paper(*inputs)[0][0, 0], official(*inputs)[0][0, 0], atol=1e-6)


def test_a_one_by_one_conv_gru_is_torchs_gru():
    torch.manual_seed(0)
    conv = ConvGRU(5, 7, kernel=1)
    gru = torch.nn.GRU(5, 7, batch_first=True)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(conv.input_gates.weight[:, :, 0, 0])
        gru.weight_hh_l0.copy_(conv.hidden_gates.weight[:, :, 0, 0])
        gru.bias_ih_l0.copy_(conv.input_gates.bias)
        gru.bias_hh_l0.copy_(conv.hidden_gates.bias)
        x = torch.randn(2, 6, 5)
        expected, _ = gru(x)
        assert torch.allclose(conv(x[:, :, :, None, None])[:, :, :, 0, 0], expected, atol=1e-6)
