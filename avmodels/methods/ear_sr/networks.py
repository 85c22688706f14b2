"""Ear-SR's networks (Meishvili et al., CVPR 2020; gmeishvili/ear_for_face_super_resolution, TF 1.13, test-only).

- ``Generator``: the official ``networks_stylegan.py``, NVIDIA's StyleGAN (v1) at 128 px: an 8-layer mapping
  network (learning rate x 0.01), a synthesis network fed 12 styles of 512 from a learned 4 x 4 constant, with
  noise inputs, instance norm, style modulation, [1, 2, 1] blurs and a ToRGB per resolution for progressive
  growing (``lod``); equalised learning rate throughout; the average W tracked for the truncation trick.
- ``Discriminator``: StyleGAN's ``D_basic`` at 128 px (FromRGB per resolution, minibatch standard deviation).
- ``HREncoder`` (E_h, inverts the generator), ``LREncoder`` (E_l, 8 x 8 face -> 12 x 512), ``SpectrogramEncoder``
  (E_a, 257 x 257 spectrogram -> 12 x 512) and ``Fuser`` (F, residual on E_l): the official ``networks.py``, in
  ``tf.contrib.layers`` conventions (TF "SAME" padding, biases only where no normaliser follows, instance norm
  with its scale and shift, Xavier-uniform weights). Their 12 x 512 outputs are Z+: 12 latents z, each mapped
  to a style by the generator's mapping network before synthesis (the official ``utils.get_images``).

``width`` scales every channel count (1.0 = official; the tests train at small widths).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

STYLES = 12  # 2 per resolution from 4 to 128 px
LATENT = 512


def _channels(count: float, width: float) -> int:
    return max(1, int(round(count * width)))


# StyleGAN v1 (official networks_stylegan.py) -----------------------------------------------------------------------

class EqualizedLinear(nn.Module):
    """A dense layer with equalised learning rate: weights stored N(0, 1 / lrmul) and scaled at run time by
    gain / sqrt(fan_in) x lrmul (and the bias by lrmul), so Adam moves every layer at the same pace."""

    def __init__(self, features_in: int, features_out: int, gain: float = math.sqrt(2), lrmul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features_out, features_in) / lrmul)
        self.bias = nn.Parameter(torch.zeros(features_out))
        self.scale, self.lrmul = gain / math.sqrt(features_in) * lrmul, lrmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lrmul)


class EqualizedConv2d(nn.Module):
    """A convolution with equalised learning rate; ``resample`` "up" is the official fused up-sampling (a
    transposed convolution with the 3 x 3 kernel spread over 4 x 4: nearest up-sampling then the convolution, in
    one pass), "down" the fused down-sampling (the convolution then 2 x 2 average pooling)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, gain: float = math.sqrt(2),
                 bias: bool = True, resample: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels_out, channels_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(channels_out)) if bias else None
        self.scale, self.resample = gain / math.sqrt(channels_in * kernel * kernel), resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.scale
        if self.resample is None:
            return F.conv2d(x, weight, self.bias, padding=weight.shape[-1] // 2)
        spread = F.pad(weight, (1, 1, 1, 1))
        spread = spread[..., 1:, 1:] + spread[..., :-1, 1:] + spread[..., 1:, :-1] + spread[..., :-1, :-1]
        if self.resample == "up":  # = nearest up-sampling then the 3 x 3 convolution (kernel flipped for the adjoint)
            out = F.conv_transpose2d(x, spread.flip(-1, -2).transpose(0, 1), stride=2, padding=1)
        else:
            out = F.conv2d(x, spread * 0.25, stride=2, padding=1)
        return out if self.bias is None else out + self.bias[None, :, None, None]


def blur(x: torch.Tensor) -> torch.Tensor:
    """The official [1, 2, 1] low-pass filter (normalised outer product), per channel."""
    kernel = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    kernel = (kernel[:, None] * kernel[None]) / 16
    return F.conv2d(x, kernel.expand(x.shape[1], 1, 3, 3), padding=1, groups=x.shape[1])


def pixel_norm(x: torch.Tensor, epsilon: float = 1e-8) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + epsilon)


class MappingNetwork(nn.Module):
    """Z (512) -> W (512): pixel norm, then 8 dense layers with leaky ReLU, learning rate x 0.01."""

    def __init__(self, layers: int = 8, lrmul: float = 0.01):
        super().__init__()
        self.layers = nn.ModuleList(EqualizedLinear(LATENT, LATENT, lrmul=lrmul) for _ in range(layers))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(z)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
        return x


class LayerEpilogue(nn.Module):
    """After each synthesis convolution: per-channel scaled noise, bias, leaky ReLU, instance norm, and the
    layer's style (an affine map of its W to a per-channel scale around 1 and a shift)."""

    def __init__(self, channels: int):
        super().__init__()
        self.noise_weight = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style = EqualizedLinear(LATENT, 2 * channels, gain=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None | str) -> torch.Tensor:
        if noise is None:
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        elif isinstance(noise, str):  # "off": zero noise, its weight kept in the graph (DDP wants each one used)
            noise = x.new_zeros(x.shape[0], 1, *x.shape[2:])
        x = x + noise * self.noise_weight[None, :, None, None]
        x = x + self.bias[None, :, None, None]
        x = F.instance_norm(F.leaky_relu(x, 0.2), eps=1e-8)
        scale, shift = self.style(w)[:, :, None, None].chunk(2, dim=1)
        return x * (scale + 1) + shift


class SynthesisBlock(nn.Module):
    """One resolution: up-sampling 3 x 3 convolution (fused from 64 px on, as the official "auto"), blur,
    epilogue; 3 x 3 convolution, epilogue."""

    def __init__(self, channels_in: int, channels_out: int, resolution: int):
        super().__init__()
        self.fused = resolution >= 64
        self.conv0 = EqualizedConv2d(channels_in, channels_out, 3, bias=False, resample="up" if self.fused else None)
        self.epilogue0 = LayerEpilogue(channels_out)
        self.conv1 = EqualizedConv2d(channels_out, channels_out, 3, bias=False)
        self.epilogue1 = LayerEpilogue(channels_out)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: tuple) -> torch.Tensor:
        x = self.conv0(x) if self.fused else self.conv0(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = self.epilogue0(blur(x), w[:, 0], noise[0])
        return self.epilogue1(self.conv1(x), w[:, 1], noise[1])


class SynthesisNetwork(nn.Module):
    """W+ (12 x 512) -> 128 x 128 RGB in about [-1, 1]; ``lod`` > 0 blends in lower resolutions' ToRGB outputs
    (progressive growing, the official "linear" structure: lod 0 is the full resolution)."""

    def __init__(self, resolution: int = 128, width: float = 1.0):
        super().__init__()
        levels = int(math.log2(resolution))
        features = [_channels(min(8192 / 2 ** stage, 512), width) for stage in range(levels)]  # official nf()
        self.const = nn.Parameter(torch.ones(1, features[1], 4, 4))
        self.epilogue_const = LayerEpilogue(features[1])
        self.conv_4 = EqualizedConv2d(features[1], features[1], 3, bias=False)
        self.epilogue_4 = LayerEpilogue(features[1])
        self.blocks = nn.ModuleList(SynthesisBlock(features[level - 2], features[level - 1], 2 ** level)
                                    for level in range(3, levels + 1))
        self.to_rgb = nn.ModuleList(EqualizedConv2d(features[level - 1], 3, 1, gain=1.0)
                                    for level in range(2, levels + 1))
        for level in range(2, levels + 1):  # the fixed noise of deterministic sampling (official noise%d)
            for k in range(2):
                self.register_buffer(f"noise{2 * (level - 2) + k}", torch.randn(1, 1, 2 ** level, 2 ** level))

    def forward(self, w: torch.Tensor, lod: float = 0.0, noise: str = "random") -> torch.Tensor:
        """``noise``: "random" (training), "fixed" (the stored noise inputs) or "off" (the official test and the
        encoders' stages: W+ alone decides the image)."""
        noise = [getattr(self, f"noise{i}") if noise == "fixed" else None if noise == "random" else "off"
                 for i in range(2 * len(self.to_rgb))]
        x = self.epilogue_const(self.const.expand(len(w), -1, -1, -1), w[:, 0], noise[0])
        x = self.epilogue_4(self.conv_4(x), w[:, 1], noise[1])
        images = self.to_rgb[0](x)
        for i, block in enumerate(self.blocks, start=1):
            x = block(x, w[:, 2 * i:2 * i + 2], noise[2 * i:2 * i + 2])
            level_lod = len(self.blocks) - i
            images = torch.lerp(self.to_rgb[i](x), F.interpolate(images, scale_factor=2, mode="nearest"),
                                float(np.clip(lod - level_lod, 0, 1)))
        return images


class Generator(nn.Module):
    """StyleGAN (v1) at 128 px: ``forward(z)`` draws from random latents (``styles``), ``forward(z_plus=...)`` from
    the encoders' 12 latents. ``w_average`` is the moving average of W for the truncation trick."""

    def __init__(self, resolution: int = 128, width: float = 1.0):
        super().__init__()
        self.mapping = MappingNetwork()
        self.synthesis = SynthesisNetwork(resolution, width)
        self.register_buffer("w_average", torch.zeros(LATENT))

    def forward(self, z: torch.Tensor | None = None, lod: float = 0.0, noise: str = "random",
                z_plus: torch.Tensor | None = None, **styles) -> torch.Tensor:
        """Images from random latents ``z`` (N x 512, through ``styles``), or from given ``z_plus`` (N x 12 x 512:
        what the encoders predict, each of the 12 mapped to its own style, as the official ``get_images``); one
        call either way, as DDP wants one forward per backward."""
        if z_plus is not None:
            w_plus = self.mapping(z_plus.flatten(0, 1)).view(z_plus.shape)
        else:
            w_plus = self.styles(z, lod=lod, **styles)
        return self.synthesis(w_plus, lod, noise)

    def styles(self, z: torch.Tensor, mixing: float = 0.0, truncation: float | None = None,
               truncation_cutoff: int = 8, lod: float = 0.0, track_average: bool = False) -> torch.Tensor:
        """W+ (N, 12, 512) of ``z``: its W on every layer; with probability ``mixing`` the layers from a random
        cutoff on take a second random Z's (official style mixing, 0.9 in training); ``truncation`` psi pulls
        the first ``truncation_cutoff`` layers towards the average W (official 0.7 and 8 at sampling);
        ``track_average`` updates that average (beta 0.995, in training)."""
        w = self.mapping(z)
        if track_average:
            with torch.no_grad():
                self.w_average.lerp_(w.mean(dim=0).float(), 1 - 0.995)
        w_plus = w[:, None].expand(-1, STYLES, -1)
        if mixing and float(torch.rand(())) < mixing:
            other = self.mapping(torch.randn_like(z))[:, None].expand(-1, STYLES, -1)
            cutoff = int(torch.randint(1, STYLES - 2 * int(lod), ()))
            w_plus = torch.where(torch.arange(STYLES, device=z.device)[None, :, None] < cutoff, w_plus, other)
        if truncation is not None:
            psi = torch.where(torch.arange(STYLES, device=z.device) < truncation_cutoff, truncation, 1.0)
            w_plus = torch.lerp(self.w_average.to(w_plus.dtype), w_plus, psi[None, :, None].to(w_plus.dtype))
        return w_plus


class Discriminator(nn.Module):
    """StyleGAN's ``D_basic`` at 128 px: FromRGB (1 x 1) into the 128 px block; blocks of a 3 x 3 convolution,
    blur and a down-sampling 3 x 3 convolution (fused at 128 px); at 4 x 4 the minibatch standard deviation (groups
    of 4), a 3 x 3 convolution and two dense layers to one score. ``lod`` fades in the input at lower resolutions
    through their FromRGB layers, as the generator's."""

    def __init__(self, resolution: int = 128, width: float = 1.0, group_size: int = 4):
        super().__init__()
        levels = int(math.log2(resolution))
        features = [_channels(min(8192 / 2 ** stage, 512), width) for stage in range(levels)]
        self.group_size = group_size
        self.from_rgb = nn.ModuleList(EqualizedConv2d(3, features[level - 1], 1) for level in range(levels, 1, -1))
        self.blocks = nn.ModuleList(nn.ModuleList([
            EqualizedConv2d(features[level - 1], features[level - 1], 3),
            EqualizedConv2d(features[level - 1], features[level - 2], 3,
                            resample="down" if 2 ** level >= 128 else None),
        ]) for level in range(levels, 2, -1))
        self.conv_4 = EqualizedConv2d(features[1] + 1, features[1], 3)
        self.dense = EqualizedLinear(features[1] * 16, features[0])
        self.score = EqualizedLinear(features[0], 1, gain=1.0)

    def forward(self, images: torch.Tensor, lod: float = 0.0, minibatches: int = 1) -> torch.Tensor:
        """Scores of ``images``: ``minibatches`` equal minibatches one after another (reals then fakes, in one pass
        as DDP wants), whose samples the minibatch standard deviation never mixes."""
        x = F.leaky_relu(self.from_rgb[0](images), 0.2)
        for i, (conv, down) in enumerate(self.blocks):
            x = F.leaky_relu(conv(x), 0.2)
            x = blur(x)
            x = F.leaky_relu(down(x) if down.resample else F.avg_pool2d(down(x), 2), 0.2)
            images = F.avg_pool2d(images, 2)
            # every FromRGB is called, weighted 0 where lod does not reach it: DDP wants each parameter used
            x = torch.lerp(x, F.leaky_relu(self.from_rgb[i + 1](images), 0.2), float(np.clip(lod - i, 0, 1)))
        x = torch.cat([x, self._minibatch_stddev(x, len(x) // minibatches)], dim=1)
        x = F.leaky_relu(self.conv_4(x), 0.2)
        return self.score(F.leaky_relu(self.dense(x.flatten(1)), 0.2)).squeeze(1)

    def _minibatch_stddev(self, x: torch.Tensor, minibatch: int) -> torch.Tensor:
        """One feature map: each sample's group's standard deviation (groups of ``group_size`` consecutive samples
        of its minibatch), averaged over features and pixels (official ``minibatch_stddev_layer``, whose groups
        are strided instead: another partition of the same independent samples)."""
        group = min(self.group_size, minibatch)
        if minibatch % group:
            group = 1
        y = x.float().reshape(-1, group, *x.shape[1:])
        y = (y - y.mean(dim=1, keepdim=True)).pow(2).mean(dim=1).add(1e-8).sqrt().mean(dim=(1, 2, 3))
        return y.to(x.dtype).repeat_interleave(group)[:, None, None, None].expand(-1, 1, *x.shape[2:])


# The encoders (official networks.py, tf.contrib.layers conventions) -------------------------------------------------

class SameConv(nn.Module):
    """``tf.contrib.layers.conv2d`` with "SAME" padding (the extra pixel of an even kernel on the right and
    bottom), then instance norm with a learned scale and shift (``tf.contrib.layers.instance_norm``'s defaults
    ``center=True, scale=True``) or a bias, then leaky ReLU."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int, norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, kernel, stride, bias=not norm)
        self.norm = nn.InstanceNorm2d(channels_out, eps=1e-6, affine=True) if norm else None
        self.kernel, self.stride = kernel, stride
        nn.init.xavier_uniform_(self.conv.weight)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        x = self.conv(F.pad(x, pads))
        if self.norm is not None:
            x = self.norm(x)
        return F.leaky_relu(x, 0.2)


def _dense(features_in: int, features_out: int) -> nn.Linear:
    layer = nn.Linear(features_in, features_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class HREncoder(nn.Module):
    """E_h: a 128 x 128 face -> Z+ (12 x 512). The official ``HRImageEncoder`` at its defaults (6 scales of 4 x 4
    convolutions from 64 channels, doubling to at most 1024, instance norm, one dense layer)."""

    def __init__(self, resolution: int = 128, scales: int = 6, filters: int = 64, width: float = 1.0):
        super().__init__()
        layers, channels, size = [], 3, resolution
        filters = _channels(filters, width)
        for i in range(scales):
            layers.append(SameConv(channels, filters, 4, 1, norm=i > 0))
            channels, filters = filters, min(filters * 2, _channels(1024, width))
            if i != scales - 1:
                layers.append(SameConv(channels, filters, 4, 2, norm=True))
                channels, size = filters, math.ceil(size / 2)
        self.features = nn.Sequential(*layers)
        self.out = _dense(channels * size * size, STYLES * LATENT)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(images).flatten(1)).view(-1, STYLES, LATENT)


class LREncoder(nn.Module):
    """E_l: an 8 x 8 face -> Z+ (12 x 512). The official ``LowResEncoder`` as ``test.py`` builds it: 3 scales of
    two 3 x 3 convolutions from 128 channels, tripling to at most 1024, instance norm, then two dense layers of
    6144 (the first with leaky ReLU)."""

    def __init__(self, resolution: int = 8, scales: int = 3, filters: int = 128, width: float = 1.0):
        super().__init__()
        filters = _channels(filters, width)
        layers, channels, size = [SameConv(3, filters, 3, 1, norm=False)], filters, resolution
        for i in range(scales):
            layers += [SameConv(channels, filters, 3, 1, norm=True), SameConv(filters, filters, 3, 1, norm=True)]
            channels, filters = filters, min(filters * 3, _channels(1024, width))
            if i != scales - 1:
                layers.append(SameConv(channels, filters, 3, 2, norm=True))
                channels, size = filters, math.ceil(size / 2)
        self.features = nn.Sequential(*layers)
        self.hidden = _dense(channels * size * size, _channels(STYLES * LATENT, width))
        self.out = _dense(_channels(STYLES * LATENT, width), STYLES * LATENT)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = F.leaky_relu(self.hidden(self.features(images).flatten(1)), 0.2)
        return self.out(hidden).view(-1, STYLES, LATENT)


class SpectrogramEncoder(nn.Module):
    """E_a: a 257 x 257 log-power spectrogram -> Z+ (12 x 512). The official ``SpectrogramEncoder`` as ``test.py``
    builds it: a stride-2 4 x 4 convolution to 64 channels, then 6 scales of a 4 x 4 convolution and a stride-2
    one doubling to at most 2048 (biases, no normaliser), then dense 8192 (leaky ReLU) and 6144."""

    def __init__(self, resolution: int = 257, scales: int = 6, filters: int = 64, max_filters: int = 2048,
                 width: float = 1.0):
        super().__init__()
        filters, max_filters = _channels(filters, width), _channels(max_filters, width)
        layers, channels, size = [SameConv(1, filters, 4, 2, norm=False)], filters, math.ceil(resolution / 2)
        for _ in range(scales):
            layers.append(SameConv(channels, filters, 4, 1, norm=False))
            channels, filters = filters, min(filters * 2, max_filters)
            layers.append(SameConv(channels, filters, 4, 2, norm=False))
            channels, size = filters, math.ceil(size / 2)
        self.features = nn.Sequential(*layers)
        self.hidden = _dense(channels * size * size, _channels(8192, width))
        self.out = _dense(_channels(8192, width), STYLES * LATENT)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        hidden = F.leaky_relu(self.hidden(self.features(spectrogram).flatten(1)), 0.2)
        return self.out(hidden).view(-1, STYLES, LATENT)


class Fuser(nn.Module):
    """F: E_l's and E_a's Z+ -> a residual added to E_l's (official ``FC3ResidualFuser``: three dense layers of
    6144 on the two concatenated, leaky ReLU between)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        hidden = _channels(STYLES * LATENT, width)
        self.layers = nn.ModuleList([_dense(2 * STYLES * LATENT, hidden), _dense(hidden, hidden),
                                     _dense(hidden, STYLES * LATENT)])

    def forward(self, from_lr: torch.Tensor, from_audio: torch.Tensor) -> torch.Tensor:
        x = torch.cat([from_lr.flatten(1), from_audio.flatten(1)], dim=1)
        x = F.leaky_relu(self.layers[0](x), 0.2)
        x = F.leaky_relu(self.layers[1](x), 0.2)
        return (self.layers[2](x) + from_lr.flatten(1)).view(-1, STYLES, LATENT)
