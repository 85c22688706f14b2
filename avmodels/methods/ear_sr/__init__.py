"""Ear-SR (Meishvili et al., CVPR 2020, "Learning to Have an Ear for Face Super-Resolution";
gmeishvili/ear_for_face_super_resolution, TF 1.13, test-only: its training was never released). An 8 x 8 face and
4 s of speech -> a 128 x 128 face, through the latent space (W+, 12 x 512) of a StyleGAN. Networks:
``networks.py``. Stages (README "Ear-SR"):

    stylegan   the official networks_stylegan.py trained as StyleGAN v1's training loop: non-saturating logistic
               loss, R1 on reals (gamma 10), Adam (0, 0.99), style mixing 0.9, a moving-average generator
               (half-life 10k images), progressive growing from 8 px (600k images per phase and fade)

The inversion, encoder and fusion stages, sampling and evaluation are still to come.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from avmodels.methods.ear_sr.networks import (
    LATENT,
    Discriminator,
    Fuser,
    Generator,
    HREncoder,
    LREncoder,
    SpectrogramEncoder,
)

LOSS_DEFAULTS = {"r1": 10.0}


class EarSR:
    name = "ear_sr"
    view = "ear_sr"
    inputs = ("lr",)
    outputs = ("image",)

    def __init__(self, model: dict, dataset: dict):
        width = float(model.get("width", 1.0))
        self.resolution = int(model.get("resolution", 128))
        self.r1_every = int(model.get("r1_every", 1))  # lazy R1 (k > 1): the penalty x k every k-th D step
        self.mixing = float(model.get("style_mixing", 0.9))
        self.ema_kimg = float(model.get("ema_kimg", 10.0))
        self.growing = dict(initial_resolution=int(model.get("lod_initial_resolution", 8)),
                            training_kimg=float(model.get("lod_training_kimg", 600.0)),
                            transition_kimg=float(model.get("lod_transition_kimg", 600.0)))
        self.networks = {
            "generator": Generator(self.resolution, width),
            "generator_ema": Generator(self.resolution, width),
            "discriminator": Discriminator(self.resolution, width),
            "hr_encoder": HREncoder(self.resolution, width=width),
            "lr_encoder": LREncoder(width=width),
            "audio_encoder": SpectrogramEncoder(width=width),
            "fuser": Fuser(width),
        }
        self.networks["generator_ema"].load_state_dict(self.networks["generator"].state_dict())
        self.networks["generator_ema"].requires_grad_(False)

    # stylegan -------------------------------------------------------------------------------------------------------

    def lod(self, images_shown: float) -> float:
        """The official progressive-growing schedule (StyleGAN v1 ``TrainingSchedule``): from
        ``lod_initial_resolution``, each resolution trains for ``lod_training_kimg`` thousand images, then fades
        into the next over ``lod_transition_kimg``; lod 0 is the full resolution."""
        kimg = images_shown / 1000
        phase = self.growing["training_kimg"] + self.growing["transition_kimg"]
        lod = math.log2(self.resolution) - math.log2(self.growing["initial_resolution"])
        if phase <= 0:
            return 0.0
        done = math.floor(kimg / phase)
        into = kimg - done * phase
        lod -= done
        if self.growing["transition_kimg"] > 0:
            lod -= max(into - self.growing["training_kimg"], 0.0) / self.growing["transition_kimg"]
        return max(lod, 0.0)

    def forward(self, nets: dict[str, nn.Module], batch: dict, ctx=None) -> dict:
        if ctx is not None and ctx.stage == "stylegan":
            count = len(batch["hr"])
            lod = self.lod(ctx.stage_step * count * ctx.world_size)
            fake = nets["generator"](torch.randn(count, LATENT, device=batch["hr"].device), lod=lod,
                                     mixing=self.mixing, track_average=True)
            return {"fake": fake, "real": _reals_at(_mirrored(batch["hr"]), lod), "lod": lod}
        raise KeyError(f"ear_sr has no stage {getattr(ctx, 'stage', None)!r}")

    def loss(self, optimizer: str, nets: dict[str, nn.Module], batch: dict, out: dict, weights: dict[str, float],
             ctx=None) -> tuple[torch.Tensor, dict[str, float]]:
        weight = lambda name: float(weights.get(name, LOSS_DEFAULTS[name]))  # noqa: E731
        if optimizer == "discriminator":
            real = out["real"].detach().requires_grad_(True)
            scores = nets["discriminator"](torch.cat([real, out["fake"].detach()]), lod=out["lod"], minibatches=2)
            real_scores, fake_scores = scores[:len(real)], scores[len(real):]
            terms = {"d_real": F.softplus(-real_scores.float()).mean(), "d_fake": F.softplus(fake_scores.float()).mean()}
            total = terms["d_real"] + terms["d_fake"]
            if ctx is None or ctx.stage_step % self.r1_every == 0:
                [gradient] = torch.autograd.grad(real_scores.float().sum(), real, create_graph=True)
                terms["r1"] = gradient.pow(2).flatten(1).sum(1).mean()
                total = total + weight("r1") / 2 * self.r1_every * terms["r1"]
            return total, {name: value.item() for name, value in terms.items()}
        if optimizer == "generator":
            adversarial = F.softplus(-nets["discriminator"](out["fake"], lod=out["lod"]).float()).mean()
            return adversarial, {"g_adversarial": adversarial.item(), "lod": out["lod"]}
        raise KeyError(f"ear_sr has no optimiser {optimizer!r}")

    def after_step(self, nets: dict[str, nn.Module], batch: dict, ctx) -> None:
        """The moving-average generator follows the trained one with a half-life of ``ema_kimg`` thousand images
        (official ``G_smoothing_kimg``); buffers (the average W, fixed noise) are copied."""
        if ctx.stage != "stylegan":
            return
        beta = 0.5 ** (len(batch["hr"]) * ctx.world_size / (self.ema_kimg * 1000)) if self.ema_kimg > 0 else 0.0
        generator = getattr(nets["generator"], "module", nets["generator"])
        with torch.no_grad():
            for average, current in zip(nets["generator_ema"].parameters(), generator.parameters()):
                average.lerp_(current, 1 - beta)
            for average, current in zip(nets["generator_ema"].buffers(), generator.buffers()):
                average.copy_(current)

    def picture_rows(self, nets: dict[str, nn.Module], batch: dict, out: dict) -> list[torch.Tensor]:
        if "fake" in out:
            count = min(8, len(out["fake"]))
            return [out["real"][:count].detach().float(), out["fake"][:count].detach().float().clamp(-1, 1)]
        return []


def _mirrored(images: torch.Tensor) -> torch.Tensor:
    """Each image flipped left-right with probability 1/2 (the official FFHQ ``mirror_augment``)."""
    flip = torch.rand(len(images), device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def _reals_at(images: torch.Tensor, lod: float) -> torch.Tensor:
    """Real images as the generator draws them at ``lod`` (official ``process_reals``): blurred towards the next
    lower resolution by lod's fraction, then shown at the resolution lod's integer part leaves, nearest-upsampled
    back to full size."""
    whole = math.floor(lod)
    if lod - whole > 0:
        lower = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2, mode="nearest")
        images = torch.lerp(images, lower, lod - whole)
    if whole > 0:
        factor = 2 ** whole
        images = F.interpolate(F.avg_pool2d(images, factor), scale_factor=factor, mode="nearest")
    return images
