"""DAVS's networks (Zhou et al., AAAI 2019; Hangz-nju-cuhk/Talking-Face-Generation-DAVS ``network/``), written from
the official architecture. Parameter counts at the defaults, asserted by the tests (official in brackets):

    person-id encoder        15,619,584  [15,619,584]  LightCNN of max-feature-map blocks -> 256, and skips
    visual word-id encoder    6,512,817   [8,414,486]  FAN, one hourglass -> 68 heatmaps -> conv -> FC 256; the
                                                       official FAN_use also holds conv5, conv6 and fc (1,901,669)
                                                       that no forward pass uses: left out
    audio word-id encoder     1,602,112   [1,603,136]  two conv branches on the 20 x 12 MFCC -> 1024 -> FC 256;
                                                       the official's unused bn5 (1,024) left out
    decoder                  22,404,547  [22,404,547]  person-id 256 + word-id 256 -> ConvT 4 x 4 -> 6 conv
                                                       blocks with upsampling, the person-id skip (160) at 32 px
    word classifier           1,829,876   [1,830,389]  FC 3072 (12 frames x 256) -> 512 -> 500 words; an unused
                                                       512 -> 1 head (513) left out
    embedding discriminator      66,049      [66,049]  audio or visual word embedding: FC 256 -> 256 -> 1
    identity discriminator    1,412,277   [1,412,277]  words from person-id features (64 x 64 x 64 per frame,
                                                       20 frames, as the official ``disfc_length``)
    sequence discriminator   19,016,770  [19,019,332]  PatchGAN on 6 stacked frames (18 channels) and a sync head
                                                       on its mouth region with the 6 frames' MFCC; the official's
                                                       unused conv8, bn7, bn8, bn9 (2,562) left out

Left-out layers are never called by the official forward passes; keeping them would break DDP (parameters
without gradients), so docs/methods/davs.md gives both numbers.

Initialisation as the official: the person-id encoder's convolutions N(0, 1/sqrt(9 x channels out)) (the LightCNN
fillers of ``IdentityEncoder.py``; 49 for the 7 x 7 stem), the decoder's Kaiming-normal fan-out
(``Decoder_networks.py``), the sequence and identity discriminators' N(0, 0.02) convolutions and N(1, 0.02)
batch-norm scales (``networks.weights_init``); the rest PyTorch's defaults, as the official leaves them.

``width`` scales the convolutional channels of the image networks (person-id encoder, visual encoder, decoder,
identity and sequence discriminators) for small runs: tests and CPU quick starts train at ``width = 0.125`` on the
same 256 px frames, where the official mouth mask and discriminator crops keep their meaning. The embeddings stay
256-d and the audio networks keep their size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from avmodels.initialisation import dcgan_normal

WORDS = 500
EMBEDDING = 256


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class MaxFeatureMap(nn.Module):
    """LightCNN's block: two convolutions with batch norm, their element-wise maximum; the convolutions from
    N(0, ``std``) with zero biases (the official per-block fillers)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int = 3, stride: int = 1, padding: int = 1,
                 std: float | None = None):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(channels_in, channels_out, kernel, stride, padding),
                               nn.BatchNorm2d(channels_out))
        self.b = nn.Sequential(nn.Conv2d(channels_in, channels_out, kernel, stride, padding),
                               nn.BatchNorm2d(channels_out))
        std = 1 / math.sqrt(9 * channels_out) if std is None else std
        for conv in (self.a[0], self.b[0]):
            nn.init.normal_(conv.weight, 0.0, std)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.max(self.a(x), self.b(x))


class PersonIdEncoder(nn.Module):
    """256 x 256 face -> (256-d identity, and the feature maps the decoder and the identity discriminator read:
    256 @ 8, 320 @ 16, 160 @ 32, 64 @ 64; channels x ``width``)."""

    def __init__(self, width: float = 1.0):
        super().__init__()

        def chain(*channels: int, kernel: int = 3, padding: int = 1) -> list[MaxFeatureMap]:
            sizes = [scaled(c, width) for c in channels]
            return [MaxFeatureMap(a, b, kernel, 1, padding) for a, b in zip(sizes, sizes[1:])]

        self.stem = MaxFeatureMap(3, scaled(32, width), 7, 2, 3, std=1 / math.sqrt(49 * scaled(32, width)))
        self.group1 = nn.Sequential(*chain(32, 32, 32, 64, 64))
        self.group2 = nn.Sequential(*chain(64, 96, 96, 128, 128, 160, 160))
        self.group3 = nn.Sequential(*chain(160, 320, 320, 320, 320))
        self.group4 = nn.Sequential(*chain(320, 256, 256, kernel=5, padding=2))

    def forward(self, face: torch.Tensor) -> list[torch.Tensor]:
        net1 = self.group1(F.max_pool2d(self.stem(face), 2))
        net2 = self.group2(F.max_pool2d(net1, 2))
        net3 = self.group3(F.max_pool2d(net2, 2))
        net4 = self.group4(F.max_pool2d(net3, 2))
        return [F.adaptive_avg_pool2d(net4, 1).flatten(1), net4, net3, net2, net1]


class FanBlock(nn.Module):
    """FAN's bottleneck: three pre-activated 3 x 3 convolutions (out/2, out/4, out/4) concatenated, plus the skip."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        half, quarter = channels_out // 2, channels_out // 4
        self.bn1, self.conv1 = nn.BatchNorm2d(channels_in), nn.Conv2d(channels_in, half, 3, padding=1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(half), nn.Conv2d(half, quarter, 3, padding=1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(quarter), nn.Conv2d(quarter, quarter, 3, padding=1, bias=False)
        self.skip = None if channels_in == channels_out else nn.Sequential(
            nn.BatchNorm2d(channels_in), nn.ReLU(True), nn.Conv2d(channels_in, channels_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        return torch.cat([out1, out2, out3], dim=1) + (x if self.skip is None else self.skip(x))


class HourGlass(nn.Module):
    """FAN's hourglass of ``depth`` levels at 256 channels, dropout 0.5 on the upper branches."""

    def __init__(self, depth: int = 4, channels: int = 256):
        super().__init__()
        self.depth = depth
        self.upper = nn.ModuleList(FanBlock(channels, channels) for _ in range(depth))
        self.lower = nn.ModuleList(FanBlock(channels, channels) for _ in range(depth))
        self.after = nn.ModuleList(FanBlock(channels, channels) for _ in range(depth))
        self.bottom = FanBlock(channels, channels)
        self.dropout = nn.Dropout(0.5)

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = self.dropout(self.upper[level](x))
        lower = self.lower[level](F.max_pool2d(x, 2))
        lower = self._level(level - 1, lower) if level > 0 else self.bottom(lower)
        lower = F.interpolate(self.after[level](lower), size=upper.shape[-2:], mode="bilinear", align_corners=False)
        return upper + lower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth - 1, x)


class VisualWordEncoder(nn.Module):
    """256 x 256 face -> 256-d word embedding: FAN's stem, one hourglass, 68 heatmaps at 64 x 64, then batch norm,
    ReLU, a stride-2 convolution to one 32 x 32 map and a linear layer."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c64, c128, c256 = (scaled(c, width) for c in (64, 128, 256))
        self.stem = nn.Sequential(nn.Conv2d(3, c64, 7, 2, 3), nn.BatchNorm2d(c64), nn.ReLU(True))
        self.block2, self.block3, self.block4 = FanBlock(c64, c128), FanBlock(c128, c128), FanBlock(c128, c256)
        self.hourglass = HourGlass(4, c256)
        self.top = FanBlock(c256, c256)
        self.last = nn.Sequential(nn.Conv2d(c256, c256, 1), nn.BatchNorm2d(c256), nn.ReLU(True))
        self.heatmaps = nn.Conv2d(c256, 68, 1)
        self.squeeze = nn.Sequential(nn.BatchNorm2d(68), nn.ReLU(True), nn.Conv2d(68, 1, 3, 2, 1))
        self.fc = nn.Linear(1024, EMBEDDING)

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(F.max_pool2d(self.block2(self.stem(face)), 2)))
        heatmaps = self.heatmaps(self.last(self.top(self.hourglass(x))))
        return self.fc(F.relu(self.squeeze(heatmaps).flatten(1)))


class AudioWordEncoder(nn.Module):
    """A 20 x 12 MFCC window -> 256-d word embedding, from two convolution branches (square and time-only
    kernels) of 512 channels each."""

    def __init__(self):
        super().__init__()
        self.square = nn.Sequential(
            nn.Conv2d(1, 64, 3, (3, 2), (1, 2), bias=False), nn.BatchNorm2d(64), nn.LeakyReLU(0.2, True),
            nn.Conv2d(64, 128, 3, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2, True),
            nn.Conv2d(128, 256, 3, 1, 0, bias=False), nn.BatchNorm2d(256), nn.LeakyReLU(0.2, True),
            nn.Conv2d(256, 512, 2, 1, bias=False))
        self.temporal = nn.Sequential(
            nn.Conv2d(1, 64, (3, 12), bias=False), _Flat(nn.BatchNorm1d(64)), nn.LeakyReLU(0.2, True),
            nn.MaxPool2d(1, 3), nn.Conv2d(64, 256, (3, 1), 1, (1, 0), bias=False), nn.BatchNorm2d(256),
            nn.LeakyReLU(0.2, True), nn.MaxPool2d(1, 2), nn.Conv2d(256, 512, (3, 1), bias=False))
        self.fc = nn.Linear(1024, EMBEDDING)

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(N, 20, 12) -> (N, 256)."""
        x = mfcc.unsqueeze(1)
        return self.fc(torch.cat([self.square(x), self.temporal(x)], dim=1).flatten(1))


class _Flat(nn.Module):
    """The official applies BatchNorm1d to a (N, C, H, 1) map; this is that, on (N, C, H)."""

    def __init__(self, norm: nn.BatchNorm1d):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.squeeze(-1)).unsqueeze(-1)


def _conv_stack(channels_in: int, channels_out: int, count: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(count):
        layers += [nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.BatchNorm2d(channels_out), nn.ReLU(True)]
        channels_in = channels_out
    return nn.Sequential(*layers)


class Decoder(nn.Module):
    """Person-id and word-id embeddings (256 each) -> a 256 x 256 face in [0, 1]; the person-id encoder's 160
    channels at 32 x 32 join before the fourth block."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c32, c64, c128, c160, c256, c512 = (scaled(c, width) for c in (32, 64, 128, 160, 256, 512))
        self.start = nn.Sequential(nn.ConvTranspose2d(scaled(256, width) + EMBEDDING, c512, 4, 1, 0),
                                   nn.BatchNorm2d(c512), nn.ReLU())
        self.blocks = nn.ModuleList([_conv_stack(c512, c512, 2), _conv_stack(c512, c512, 3), _conv_stack(c512, c256, 4),
                                     _conv_stack(c256 + c160, c256, 4), _conv_stack(c256, c128, 3),
                                     _conv_stack(c128, c64, 2)])
        self.end = nn.Sequential(nn.ConvTranspose2d(c64, c32, 3, 1, 1), nn.BatchNorm2d(c32), nn.ReLU(),
                                 nn.ConvTranspose2d(c32, 3, 3, 1, 1), nn.Tanh())
        for module in self.blocks.modules():  # the official ConvBlock's initial(): Kaiming-normal, fan-out
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                nn.init.zeros_(module.bias)

    def forward(self, person: list[torch.Tensor], word: torch.Tensor) -> torch.Tensor:
        x = self.start(torch.cat([person[0], word], dim=1)[:, :, None, None])
        for i, block in enumerate(self.blocks):
            if i == 3:
                x = torch.cat([person[3], x], dim=1)
            x = F.interpolate(block(x), scale_factor=2, mode="bilinear", align_corners=False)
        return (self.end(x) + 1) / 2


class WordClassifier(nn.Module):
    """12 frames' word embeddings -> 500 word logits: FC 3072 -> 512 -> ReLU -> FC 500, the first layer's weights
    from N(0, 1e-4) and its bias 0 (the official ``ModelFusion``, ``network/networks.py``; its unused 512 -> 1
    ``dis`` head left out)."""

    def __init__(self, frames: int = 12, words: int = WORDS):
        super().__init__()
        self.frames = frames
        self.fc1, self.fc2 = nn.Linear(frames * EMBEDDING, 512), nn.Linear(512, words)
        nn.init.normal_(self.fc1.weight, 0.0, 1e-4)
        nn.init.zeros_(self.fc1.bias)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(embeddings.reshape(-1, self.frames * EMBEDDING))))


class EmbeddingDiscriminator(nn.Module):
    """Which modality a word embedding came from (audio or visual): FC 256 -> 256 -> ReLU -> 1 (a logit)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(EMBEDDING, 256), nn.ReLU(True), nn.Linear(256, 1))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net(embedding.reshape(-1, EMBEDDING)).squeeze(-1)


class IdentityDiscriminator(nn.Module):
    """Word logits from person-id features (64 channels at 64 x 64 per frame, ``frames`` frames): the identity
    branch must not carry the word, so its softmax is pushed towards uniform."""

    def __init__(self, frames: int = 20, words: int = WORDS, width: float = 1.0):
        super().__init__()
        self.frames, self.channels = frames, scaled(64, width)
        self.conv = nn.Conv2d(self.channels, 1, 3, 2, 1)
        self.fc = nn.Linear(1024, 128)
        self.dropout = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128 * frames, words)
        dcgan_normal(self)  # the official networks.weights_init

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        per_frame = self.fc(F.relu(self.conv(features.reshape(-1, self.channels, 64, 64))).flatten(1))
        return self.fc2(self.dropout(per_frame.reshape(-1, 128 * self.frames)))


class SequenceDiscriminator(nn.Module):
    """PatchGAN (n_layers 3, ndf 64) on ``frames`` stacked frames, and a sync head: the mouth region of its last
    map (rows 19:28, cols 11:20 at 256 px) with the frames' MFCC windows -> one logit for audio-visual agreement."""

    def __init__(self, frames: int = 6, width: float = 1.0):
        super().__init__()
        bn = nn.BatchNorm2d
        c64, c128, c256, c512 = (scaled(c, width) for c in (64, 128, 256, 512))
        self.patch = nn.Sequential(
            nn.Conv2d(3 * frames, c64, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(c64, c128, 4, 2, 1, bias=False), bn(c128), nn.LeakyReLU(0.2, True),
            nn.Conv2d(c128, c256, 4, 2, 1, bias=False), bn(c256), nn.LeakyReLU(0.2, True),
            nn.Conv2d(c256, c512, 4, 1, 1, bias=False), bn(c512), nn.LeakyReLU(0.2, True))
        self.patch_logits = nn.Conv2d(c512, 1, 4, 1, 1)
        self.mouth = nn.Sequential(nn.Conv2d(c512, c512, 3, 1, bias=False), bn(c512), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(c512, c512, 7, 1), nn.LeakyReLU(0.2, True))
        self.audio = nn.Sequential(
            nn.Conv2d(frames, 64, 3, (3, 2), (1, 2), bias=False), bn(64),
            nn.Conv2d(64, 128, 3, 2, 1, bias=False), bn(128),
            nn.Conv2d(128, 256, 3, 1, 0, bias=False), bn(256),
            nn.Conv2d(256, 256, 2, 1, bias=False), bn(256))
        self.fc, self.fc2 = nn.Linear(256 + c512, 512), nn.Linear(512, 1)
        dcgan_normal(self)  # the official networks.weights_init

    def forward(self, frames: torch.Tensor, mfcc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``frames`` (B, 3 x frames, 256, 256) and ``mfcc`` (B, frames, 20, 12) -> (patch logits, sync logit)."""
        features = self.patch(frames)
        mouth = self.mouth(features[:, :, 19:28, 11:20]).flatten(1)
        joint = torch.cat([mouth, self.audio(mfcc).flatten(1)], dim=1)
        return self.patch_logits(features), self.fc2(self.fc(joint)).squeeze(-1)
