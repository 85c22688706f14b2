"""HeadGAN's networks (Doukas et al., ICCV 2021; michaildoukas/headGAN ``models/``), written from the official
architecture at its defaults (256 px, ngf 32, a 64 x 64 bottleneck: two down-samplings, PixelShuffle up-sampling,
spectral norm with instance norm, SPADE with 256 hidden channels). Parameter counts, asserted by the tests:

    flow network        30,606,179  encoder of the reference (NMFC + RGB) at three scales, SPADE decoder driven by
                                    3 consecutive NMFC frames, flow and mask heads; warps the reference features
    rendering network   21,144,323  encoder of the 3 NMFC frames, SPADE blocks on the warped features (and last on
                                    the warped reference image), AdaIN blocks from the 300-d audio features
                                    (15,302,000 without audio: the generator is 45,908,134 then)
    image D              5,537,410  two-scale PatchGAN (4 layers, ndf 64) on NMFC + image
    mouth D              6,145,666  the same on a 64 x 64 mouth crop with the audio features tiled (303 channels)

``width`` scales the generator's and discriminators' channels for small runs (tests, CPU quick starts).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

AUDIO_FEATURES = 300  # per frame: 84 audio statistics + 216 character one-hots (avprep.features.headgan)
NMFC_FRAMES = 3  # consecutive NMFC renders the generator reads (official n_frames_G)


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def normalised_conv(channels_in: int, channels_out: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Module:
    """The official non-adaptive layer: a spectrally normalised convolution without bias, then instance norm
    with affine parameters."""
    conv = spectral_norm(nn.Conv2d(channels_in, channels_out, kernel, stride, padding, bias=False))
    return nn.Sequential(conv, nn.InstanceNorm2d(channels_out, affine=True))


class Spade(nn.Module):
    """Instance norm without parameters, then a scale and shift predicted per pixel from a conditioning map."""

    def __init__(self, channels: int, condition_channels: int, hidden: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(condition_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        hidden = self.shared(F.interpolate(condition, size=x.shape[2:], mode="nearest"))
        return self.norm(x) * (1 + self.gamma(hidden)) + self.beta(hidden)


class SpadeBlock(nn.Module):
    """SPADE's residual block (spectral-norm convolutions, leaky ReLU 0.2), a learned shortcut when the widths
    differ; its SPADE layers have ``hidden`` channels (256 in the official code)."""

    def __init__(self, condition_channels: int, channels_in: int, channels_out: int, hidden: int = 256):
        super().__init__()
        middle = min(channels_in, channels_out)
        self.norm_0, self.conv_0 = Spade(channels_in, condition_channels, hidden), spectral_norm(
            nn.Conv2d(channels_in, middle, 3, padding=1))
        self.norm_1, self.conv_1 = Spade(middle, condition_channels, hidden), spectral_norm(
            nn.Conv2d(middle, channels_out, 3, padding=1))
        self.shortcut = None
        if channels_in != channels_out:
            self.norm_s = Spade(channels_in, condition_channels, hidden)
            self.shortcut = spectral_norm(nn.Conv2d(channels_in, channels_out, 1, bias=False))

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(F.leaky_relu(self.norm_s(x, condition), 0.2))
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, condition), 0.2))
        return skip + self.conv_1(F.leaky_relu(self.norm_1(dx, condition), 0.2))


class AdaIN(nn.Module):
    """Instance norm, then a scale and shift per channel from a style vector (the frame's audio features)."""

    def __init__(self, style: int, channels: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.fc = nn.Linear(style, 2 * channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.fc(style)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdaINBlock(nn.Module):
    """Two AdaIN + leaky ReLU + convolution steps; the official block has no skip connection."""

    def __init__(self, channels: int, style: int = AUDIO_FEATURES):
        super().__init__()
        self.norm1, self.conv1 = AdaIN(style, channels), spectral_norm(nn.Conv2d(channels, channels, 3, 1, 1))
        self.norm2, self.conv2 = AdaIN(style, channels), spectral_norm(nn.Conv2d(channels, channels, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.leaky_relu(self.norm1(x, style), 0.2))
        return self.conv2(F.leaky_relu(self.norm2(x, style), 0.2))


def _encoder(channels_in: int, ngf: int, levels: int) -> nn.ModuleList:
    """A 7 x 7 reflection-padded first layer, then ``levels`` stride-2 layers quadrupling the channels."""
    layers = [nn.Sequential(nn.ReflectionPad2d(3), normalised_conv(channels_in, ngf, 7), nn.ReLU())]
    for level in range(levels):
        layers.append(nn.Sequential(normalised_conv(ngf * 4 ** level, ngf * 4 ** (level + 1), 3, 2, 1), nn.ReLU()))
    return nn.ModuleList(layers)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` sampled at each pixel plus its flow (pixels; x then y), bilinear, clamped at the borders: what
    the official FlowNet2 ``Resample2d`` kernel computes."""
    _, _, height, width = image.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=image.device, dtype=flow.dtype),
                            torch.arange(width, device=image.device, dtype=flow.dtype), indexing="ij")
    x = (xs + flow[:, 0]) * (2 / max(width - 1, 1)) - 1
    y = (ys + flow[:, 1]) * (2 / max(height - 1, 1)) - 1
    return F.grid_sample(image, torch.stack([x, y], dim=-1).to(image.dtype), mode="bilinear",
                         padding_mode="border", align_corners=True)


class FlowNetwork(nn.Module):
    """Reference (NMFC + RGB, 6 channels) and the 3 driving NMFC frames -> a flow, a mask in [0, 1] that scales
    it, and the reference's encoder features warped by the flow at full, 1/2 and 1/4 size."""

    def __init__(self, width: float = 1.0, levels: int = 2):
        super().__init__()
        ngf, condition, hidden = scaled(32, width), 3 * NMFC_FRAMES, scaled(256, width)
        self.encoder = _encoder(6, ngf, levels)
        bottom = ngf * 4 ** levels
        self.residual = nn.ModuleList(SpadeBlock(condition, bottom, bottom, hidden) for _ in range(levels))
        self.up = nn.ModuleList(SpadeBlock(condition, ngf * 4 ** (levels - i), ngf * 4 ** (levels - i), hidden)
                                for i in range(levels))
        self.flow = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, 2, 7))
        self.mask = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, 1, 7))

    def forward(self, nmfc: torch.Tensor, reference: torch.Tensor):
        features, x = [], reference
        for layer in self.encoder:
            x = layer(x)
            features.append(x)
        for block in self.residual:
            x = block(x, nmfc)
        for block in self.up:
            x = F.pixel_shuffle(block(x, nmfc), 2)
        mask = (torch.tanh(self.mask(x)) + 1) / 2
        flow = self.flow(x) * mask
        warped, scaled_flow = [], flow
        for feature in features:
            warped.append(warp(feature, scaled_flow))
            scaled_flow = F.avg_pool2d(scaled_flow, 2) / 2  # half the size, half the displacement
        return flow, warped, mask


class RenderingNetwork(nn.Module):
    """The 3 NMFC frames, encoded, decoded through SPADE blocks conditioned on the warped reference features
    (deepest first), AdaIN blocks from the audio features, PixelShuffle up-sampling, and a last SPADE block on the
    warped reference image -> a frame in [-1, 1]."""

    def __init__(self, width: float = 1.0, levels: int = 2, audio: bool = True):
        super().__init__()
        ngf, hidden = scaled(32, width), scaled(256, width)
        self.encoder = _encoder(3 * NMFC_FRAMES, ngf, levels)
        sizes = [ngf * 4 ** (levels - i) for i in range(levels)] + [ngf]
        self.decoder = nn.ModuleList(SpadeBlock(size, size, size, hidden) for size in sizes)
        self.audio = nn.ModuleList(AdaINBlock(size) for size in sizes) if audio else None
        self.last = SpadeBlock(3, ngf, ngf, hidden)
        self.to_image = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7))

    def forward(self, nmfc: torch.Tensor, warped_features: list[torch.Tensor], warped_image: torch.Tensor,
                audio: torch.Tensor | None) -> torch.Tensor:
        x = nmfc
        for layer in self.encoder:
            x = layer(x)
        for i, block in enumerate(self.decoder):
            x = block(x, warped_features[-1 - i])
            if self.audio is not None:
                x = self.audio[i](x, audio)
            if i < len(self.decoder) - 1:
                x = F.pixel_shuffle(x, 2)
        x = self.last(x, warped_image)
        return torch.tanh(self.to_image(F.leaky_relu(x, 0.2)))


class Generator(nn.Module):
    """HeadGAN's generator: (3 NMFC frames as 9 channels, reference NMFC + RGB as 6, audio features (300) or None)
    -> (frame, warped reference image, flow, flow mask)."""

    def __init__(self, width: float = 1.0, audio: bool = True):
        super().__init__()
        self.flow_network = FlowNetwork(width)
        self.rendering_network = RenderingNetwork(width, audio=audio)

    def forward(self, nmfc: torch.Tensor, reference: torch.Tensor, audio: torch.Tensor | None = None):
        flow, warped_features, mask = self.flow_network(nmfc, reference)
        warped_image = warp(reference[:, 3:], flow)
        frame = self.rendering_network(nmfc, warped_features, warped_image, audio)
        return frame, warped_image, flow, mask


class PatchDiscriminator(nn.Module):
    """PatchGAN of 4 layers (ndf 64 doubling to 512, the last stride 1), spectral norm and instance norm between
    the first and the last convolutions; returns every layer's output (the last are the patch logits)."""

    def __init__(self, channels_in: int, width: float = 1.0, layers: int = 4):
        super().__init__()
        nf = scaled(64, width)
        blocks = [nn.Sequential(nn.Conv2d(channels_in, nf, 4, 2, 2), nn.LeakyReLU(0.2))]
        for n in range(1, layers):
            previous, nf = nf, min(nf * 2, scaled(512, width))
            blocks.append(nn.Sequential(normalised_conv(previous, nf, 4, 1 if n == layers - 1 else 2, 2),
                                        nn.LeakyReLU(0.2)))
        blocks.append(nn.Conv2d(nf, 1, 4, 1, 2))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs


class MultiscaleDiscriminator(nn.Module):
    """Two PatchGANs, the second on the input average-pooled to half size (3 x 3, stride 2)."""

    def __init__(self, channels_in: int, width: float = 1.0, scales: int = 2):
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(channels_in, width) for _ in range(scales))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        outputs = []
        for discriminator in self.scales:
            outputs.append(discriminator(x))
            x = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        return outputs


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """The official Xavier init (normal, gain 0.02) of convolution and linear weights, biases zero. The official
    ``init_weights`` writes into ``module.weight`` of spectrally normalised layers, a tensor recomputed from the
    unnormalised weight before every forward, so those layers keep PyTorch's default init there; so they do
    here."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)) and not hasattr(layer, "parametrizations"):
            nn.init.xavier_normal_(layer.weight, gain=gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
