"""DAVS's networks: the official parameter counts (or why not) and the shapes the official forward passes give."""
from __future__ import annotations

import pytest
import torch

from avmodels.methods.davs.networks import (AudioWordEncoder, Decoder, EmbeddingDiscriminator, IdentityDiscriminator,
                                            PersonIdEncoder, SequenceDiscriminator, VisualWordEncoder,
                                            WordClassifier)

# Official counts, less the layers no official forward pass calls (left out: they would break DDP).
EXPECTED = {
    PersonIdEncoder: 15_619_584,
    VisualWordEncoder: 8_414_486 - 1_638_656 - 613 - 262_400,  # FAN_use's conv5, conv6 and fc
    AudioWordEncoder: 1_603_136 - 1_024,  # mfcc_encoder's bn5
    Decoder: 22_404_547,
    WordClassifier: 1_830_389 - 513,  # the 512 -> 1 head
    EmbeddingDiscriminator: 66_049,
    IdentityDiscriminator: 1_412_277,
    SequenceDiscriminator: 19_019_332 - 512 - 1_024 - 2 - 1_024,  # conv8, bn7, bn8 and bn9
}


@pytest.mark.parametrize("network", list(EXPECTED), ids=lambda n: n.__name__)
def test_parameter_counts(network):
    with torch.device("meta"):
        assert sum(p.numel() for p in network().parameters()) == EXPECTED[network]


def test_every_network_within_one_percent_of_the_official_count_but_the_visual_encoder():
    official = {VisualWordEncoder: 8_414_486, AudioWordEncoder: 1_603_136, WordClassifier: 1_830_389,
                SequenceDiscriminator: 19_019_332}
    for network, count in official.items():
        gap = abs(EXPECTED[network] - count) / count
        assert (gap < 0.01) != (network is VisualWordEncoder), network.__name__


def test_the_official_forward_shapes():
    torch.manual_seed(0)
    faces = torch.rand(2, 3, 256, 256)
    person = PersonIdEncoder().eval()
    with torch.no_grad():
        identity = person(faces)
        assert [tuple(x.shape) for x in identity] == [(2, 256), (2, 256, 8, 8), (2, 320, 16, 16), (2, 160, 32, 32),
                                                       (2, 64, 64, 64)]
        visual = VisualWordEncoder().eval()(faces)
        audio = AudioWordEncoder().eval()(torch.randn(2, 20, 12))
        assert visual.shape == audio.shape == (2, 256)
        made = Decoder().eval()(identity, audio)
        assert made.shape == (2, 3, 256, 256) and 0 <= made.min() and made.max() <= 1
        assert WordClassifier().eval()(torch.randn(2, 12, 256)).shape == (2, 500)
        assert EmbeddingDiscriminator()(audio).shape == (2,)
        assert IdentityDiscriminator().eval()(identity[4].repeat(10, 1, 1, 1)).shape == (1, 500)  # 20 frames
        patches, sync = SequenceDiscriminator().eval()(torch.rand(2, 18, 256, 256), torch.randn(2, 6, 20, 12))
        assert patches.shape == (2, 1, 30, 30) and sync.shape == (2,)
