"""What more than one method's objective uses: BCE on logits and a discriminator's real and fake passes (ATVGnet,
DAVS, HeadGAN); the VGG19 perceptual loss (HeadGAN, Ear-SR), its frozen network read from a user file
(torchvision's state dict; it cannot be downloaded here) and never checkpointed."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avmodels.checkpoints import load_user_weights
from avmodels.methods.base import is_distributed


def bce(logit: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    """BCE of logits against a constant target, in float32 (bf16 autocast refuses plain BCE on probabilities)."""
    logit = logit.float()
    return F.binary_cross_entropy_with_logits(logit, torch.as_tensor(target, device=logit.device).expand_as(logit))


def real_and_fake(discriminator, real: tuple, fake: tuple) -> tuple:
    """``discriminator(*real)`` and ``discriminator(*fake)``: two passes, as the official codes (batch-norm
    statistics of real and fake apart); under DDP one pass over both concatenated, since DDP takes one forward
    per backward, its outputs (a tensor, or nested lists and tuples of them: HeadGAN's scales of layers) cut
    back into the real and the fake halves."""
    if is_distributed(discriminator):
        return _halves(discriminator(*(torch.cat([r, f]) for r, f in zip(real, fake))), len(real[0]))
    return discriminator(*real), discriminator(*fake)


def _halves(outputs, count: int) -> tuple:
    if torch.is_tensor(outputs):
        return outputs[:count], outputs[count:]
    halves = [_halves(output, count) for output in outputs]
    return type(outputs)(half for half, _ in halves), type(outputs)(half for _, half in halves)

# torchvision's VGG19 ``features``: channels per 3 x 3 convolution, "M" a 2 x 2 max pool (indices as torchvision's)
VGG19_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
VGG19_SLICES = (2, 7, 12, 21, 30)  # ends of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in ``features``
VGG19_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)  # the official VGGLoss weights of those five layers


class VGG19Features(nn.Module):
    """VGG19's first 30 feature layers (to relu5_1), frozen, with torchvision's module indices so its state dict
    (``features.N.weight``) loads as it is; ``forward`` returns the five relu*_1 activations. As the official
    loss, images go in as they are, in [-1, 1], without ImageNet normalisation."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG19_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers[:VGG19_SLICES[-1]])
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs, start = [], 0
        for end in VGG19_SLICES:
            x = self.features[start:end](x)
            outputs.append(x)
            start = end
        return outputs


def perceptual_loss(vgg: VGG19Features, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The official VGG loss: L1 between the five activations, weighted 1/32 .. 1 (the real side held fixed)."""
    with torch.no_grad():
        targets = vgg(real)
    return sum(w * F.l1_loss(a, b) for w, a, b in zip(VGG19_WEIGHTS, vgg(fake), targets))


def load_vgg19(path: str) -> VGG19Features:
    """VGG19 features from a torchvision ``vgg19`` state dict file (``torch.save(vgg19(weights=...).state_dict())``,
    optionally under ``state_dict``), loaded with ``weights_only=True``; the classifier's keys are ignored."""
    state = load_user_weights(path, "model.vgg19")
    vgg = VGG19Features()
    wanted = vgg.state_dict()
    missing = sorted(key for key in wanted if key not in state)
    if missing:
        raise ValueError(f"model.vgg19: {path} is not a torchvision VGG19 state dict (missing {', '.join(missing[:3])}"
                         f"{' ...' if len(missing) > 3 else ''})")
    wrong = [key for key in wanted if state[key].shape != wanted[key].shape]
    if wrong:
        raise ValueError(f"model.vgg19: {path}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, VGG19 has "
                         f"{tuple(wanted[wrong[0]].shape)}")
    vgg.load_state_dict({key: state[key] for key in wanted})
    return vgg.eval()


def vgg19_unset(needed_by: str, without: str) -> ValueError:
    """The error for a recipe that needs ``model.vgg19`` and does not say it, telling both ways to set it."""
    return ValueError(f'{needed_by} uses a VGG19 perceptual loss: set model.vgg19 = "vgg19.pth" (a torchvision '
                      f'vgg19 state dict saved with torch.save), or model.vgg19 = "" to {without}')


def vgg19_from_setting(setting: str | None, device, needed_by: str, without: str) -> tuple[VGG19Features | None, list]:
    """The recipe's ``model.vgg19``: a file -> (the network on ``device``, []); "" -> (None, a note that the
    perceptual terms are off); absent -> a ValueError saying both ways (``needed_by`` and ``without`` word it)."""
    if setting is None:
        raise vgg19_unset(needed_by, without)
    if not setting:
        return None, [f'model.vgg19 = "": the VGG19 perceptual terms are off ({without})']
    return load_vgg19(setting).to(device), []
