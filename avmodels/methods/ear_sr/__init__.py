"""Ear-SR (Meishvili et al., CVPR 2020, "Learning to Have an Ear for Face Super-Resolution";
gmeishvili/ear_for_face_super_resolution, TF 1.13, test-only: its training was never released). An 8 x 8 face and
4 s of speech -> a 128 x 128 face, through the latent space of a StyleGAN: 12 latents z (Z+, 12 x 512), each
mapped to a style by the generator's mapping network (official ``utils.get_images``). Networks: ``networks.py``.
Stages (docs/methods/ear_sr.md):

    stylegan   the official networks_stylegan.py trained as StyleGAN v1's training loop: non-saturating logistic
               loss, R1 on reals (gamma 10), Adam (0, 0.99), style mixing 0.9, a moving-average generator
               (half-life 10k images), progressive growing from 8 px (600k images per phase and fade)

    invert          E_h learns to invert the moving-average generator (noise off, as the official test): L1 and
                    VGG19 perceptual loss between a real face and G(E_h(face))
    invert_joint    E_h and that generator together, a regulariser keeping the generator's images of random
                    latents near those of its state when the stage began, its weight halved whenever the
                    reconstruction loss stops improving (the mapping network is trained with it)
    encoders_lr     E_l on one half of the speakers (split ``train_a``): its Z+ towards E_h's, and 40 x L1 between
                    G(E_l(lr)) byte-stretched and downsampled as the inputs were, and the 8 x 8 input
    encoders_audio  E_a on the other half (``train_b``): its Z+ towards the mean of E_h(face) and E_h(mirrored face)
    fuse            F and E_a on all the training data: F's residual on E_l's Z+ towards E_h's, with the same
                    downsampling consistency

The official code has no training; the later stages are written from the project's notes on the paper
(docs/methods/ear_sr.md says which choices are ours); every weight is in the recipe's ``losses`` tables.
``sample`` draws the paper's figure row; ``evaluation.py`` the paper's identity measure (closed or open set, by
the split) with PSNR and SSIM, beside E_l alone and bicubic.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from avmodels.losses import perceptual_loss, vgg19_from_setting, vgg19_unset
from avmodels.methods.base import Method, StepContext, unwrapped
from avmodels.methods.ear_sr import evaluation
from avmodels.methods.ear_sr.networks import (
    LATENT,
    STYLES,
    Discriminator,
    Fuser,
    Generator,
    HREncoder,
    LREncoder,
    SpectrogramEncoder,
)
from avmodels.methods.ear_sr.view import view as shard_view
from avmodels.pictures import from_uint8
from avprep.features.spectrogram import CLIP_SAMPLES as SPECTROGRAM_SAMPLES
from avprep.features.spectrogram import earsr_spectrogram


class PlateauHalving(nn.Module):
    """A loss weight halved whenever a watched loss has not improved on its best (smoothed, by a 1% margin) for
    ``patience`` steps; its state is buffers, so it is checkpointed with the networks and resumes exactly."""

    def __init__(self, weight: float, patience: int, smoothing: float = 0.99):
        super().__init__()
        self.patience, self.smoothing = patience, smoothing
        for name, value in (("weight", weight), ("smoothed", math.inf), ("best", math.inf), ("waited", 0.0)):
            self.register_buffer(name, torch.tensor(float(value), dtype=torch.float64))

    def update(self, loss: float) -> None:
        smoothed = loss if math.isinf(self.smoothed.item()) else (self.smoothing * self.smoothed.item()
                                                                   + (1 - self.smoothing) * loss)
        self.smoothed.fill_(smoothed)
        if smoothed < 0.99 * self.best.item():
            self.best.fill_(smoothed)
            self.waited.zero_()
            return
        self.waited.add_(1)
        if self.waited.item() >= self.patience:
            self.weight.mul_(0.5)
            self.waited.zero_()


class EarSR(Method):
    name = "ear_sr"
    stages = ("stylegan", "invert", "invert_joint", "encoders_lr", "encoders_audio", "fuse")
    loss_terms = {"stylegan": ("r1",), "invert": ("reconstruction", "perceptual"),
                  "invert_joint": ("reconstruction", "perceptual"), "encoders_lr": ("latent", "downsampling"),
                  "encoders_audio": ("latent",), "fuse": ("latent", "downsampling")}
    view = staticmethod(shard_view)
    inputs = ("lr",)  # and --audio, optional: without it only E_l's face is drawn
    outputs = ("image",)
    main_measures = {"identity_accuracy": "higher", "identity_accuracy_lr_only": "higher"}

    def __init__(self, model: dict, dataset: dict):
        width = float(model.get("width", 1.0))
        # the 8 x 8 inputs' filter: the official one byte-stretches the face first, so the consistency term must too
        self.stretch = dataset.get("recipe", {}).get("lr_filter", "pil_bicubic") == "pil_bicubic"
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
            "generator_init": Generator(self.resolution, width),  # invert_joint's fixed reference
            "regulariser": PlateauHalving(float(model.get("regulariser", 1.0)),
                                          int(model.get("regulariser_patience", 2000))),
        }
        for name in ("generator_ema", "generator_init"):
            self.networks[name].load_state_dict(self.networks["generator"].state_dict())
            self.networks[name].requires_grad_(False)
        self.vgg19_file, self.vgg = model.get("vgg19"), None

    def load_auxiliary(self, device) -> list[str]:
        """The frozen VGG19 of the inversion's perceptual loss, from ``model.vgg19`` (never checkpointed); a run
        of the stylegan stage alone does without it (``begin_stage`` asks for it where it is needed)."""
        if self.vgg19_file is None:
            return []
        self.vgg, notes = vgg19_from_setting(self.vgg19_file, device, *self.VGG_USE)
        return notes

    VGG_USE = ("Ear-SR's inversion", "invert without it")

    def begin_stage(self, nets: dict[str, nn.Module], data, ctx: StepContext) -> None:
        """The inversion stages need the VGG19 setting; ``invert_joint`` starting holds the generator as it finds
        it (``generator_init``: what the regulariser keeps the generator near)."""
        if ctx.stage.startswith("invert") and self.vgg19_file is None:
            raise vgg19_unset(*self.VGG_USE)
        if ctx.stage == "invert_joint" and ctx.stage_step == 0:
            with torch.no_grad():
                nets["generator_init"].load_state_dict(unwrapped(nets["generator_ema"]).state_dict())

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

    def forward(self, nets: dict[str, nn.Module], batch: dict, ctx: StepContext) -> dict:
        if ctx.stage == "stylegan":
            count = len(batch["hr"])
            lod = self.lod(ctx.stage_step * count * ctx.world_size)
            fake = nets["generator"](torch.randn(count, LATENT, device=batch["hr"].device), lod=lod,
                                     mixing=self.mixing, track_average=True)
            return {"fake": fake, "real": _reals_at(_mirrored(batch["hr"]), lod), "lod": lod}
        stage = ctx.stage
        real, draw = batch["hr"], lambda z: nets["generator_ema"](z_plus=z, noise="off")  # noqa: E731
        out = {"real": real}
        if stage.startswith("invert"):
            out["latent"] = nets["hr_encoder"](real)
            if stage == "invert":
                out["made"] = draw(out["latent"])
                return out
            z = torch.randn(len(real), 1, LATENT, device=real.device).expand(-1, STYLES, -1)
            both = torch.cat([out["latent"], z])
            out["made"], out["drawn"] = draw(both).split(len(real))  # one pass (DDP)
            with torch.no_grad():  # the same batch as the trained generator's: equal weights draw equal images
                out["drawn_before"] = nets["generator_init"](z_plus=both.detach(), noise="off")[len(real):]
            return out
        with torch.no_grad():
            out["target"] = nets["hr_encoder"](real)
            if stage == "encoders_audio":  # the identity, not the pose: the face and its mirror image agree
                out["target"] = (out["target"] + nets["hr_encoder"](real.flip(-1))) / 2
        if stage == "encoders_audio":  # the loss is on the latents alone; the pictures draw their faces
            out["latent"] = nets["audio_encoder"](batch["spectrogram"])
            return out
        if stage == "encoders_lr":
            out["latent"] = nets["lr_encoder"](batch["lr"])
        else:
            with torch.no_grad():
                out["from_lr"] = nets["lr_encoder"](batch["lr"])
            out["latent"] = nets["fuser"](out["from_lr"], nets["audio_encoder"](batch["spectrogram"]))
        out["made"] = draw(out["latent"])
        return out

    def loss(self, optimizer: str, nets: dict[str, nn.Module], batch: dict, out: dict, weights: dict[str, float],
             ctx=None) -> tuple[torch.Tensor, dict[str, float]]:
        if optimizer == "discriminator":
            real = out["real"].detach().requires_grad_(True)
            scores = nets["discriminator"](torch.cat([real, out["fake"].detach()]), lod=out["lod"], minibatches=2)
            real_scores, fake_scores = scores[:len(real)], scores[len(real):]
            terms = {"d_real": F.softplus(-real_scores.float()).mean(),
                     "d_fake": F.softplus(fake_scores.float()).mean()}
            total = terms["d_real"] + terms["d_fake"]
            if ctx is None or ctx.stage_step % self.r1_every == 0:
                [gradient] = torch.autograd.grad(real_scores.float().sum(), real, create_graph=True)
                terms["r1"] = gradient.pow(2).flatten(1).sum(1).mean()
                total = total + weights["r1"] / 2 * self.r1_every * terms["r1"]
            return total, {name: value.item() for name, value in terms.items()}
        if optimizer == "generator":
            adversarial = F.softplus(-nets["discriminator"](out["fake"], lod=out["lod"]).float()).mean()
            return adversarial, {"g_adversarial": adversarial.item(), "lod": out["lod"]}
        if optimizer in ("inversion", "lr_encoder", "audio_encoder", "fusion"):
            return self._encoder_loss(ctx.stage, nets, batch, out, weights)
        raise KeyError(f"ear_sr has no optimiser {optimizer!r} (discriminator, generator, inversion, lr_encoder, "
                       "audio_encoder, fusion)")

    def _encoder_loss(self, stage: str, nets, batch: dict, out: dict, weights: dict) -> tuple[torch.Tensor, dict]:
        terms = {}
        if stage.startswith("invert"):
            terms["reconstruction"] = F.l1_loss(out["made"].float(), out["real"])
            if self.vgg is not None:
                terms["perceptual"] = perceptual_loss(self.vgg, out["made"].float(), out["real"])
        else:
            terms["latent"] = F.l1_loss(out["latent"].float(), out["target"].float())
        if stage in ("encoders_lr", "fuse"):  # the face made, shrunk as the input was, must be the input
            shrunk = shrink(out["made"].float(), batch["lr"].shape[-1], self.stretch)
            terms["downsampling"] = F.l1_loss(shrunk, batch["lr"])
        total = sum(weights[name] * value for name, value in terms.items())
        logged = {name: value.item() for name, value in terms.items()}
        if stage == "invert_joint":
            regulariser = nets["regulariser"]
            held = F.l1_loss(out["drawn"].float(), out["drawn_before"].float())
            total = total + regulariser.weight.item() * held
            logged.update(regulariser=held.item(), regulariser_weight=regulariser.weight.item())
            regulariser.update(logged["reconstruction"])
        return total, logged

    def after_step(self, nets: dict[str, nn.Module], batch: dict, ctx) -> None:
        """The moving-average generator follows the trained one with a half-life of ``ema_kimg`` thousand images
        (official ``G_smoothing_kimg``); buffers (the average W, fixed noise) are copied."""
        if ctx.stage != "stylegan":
            return
        beta = 0.5 ** (len(batch["hr"]) * ctx.world_size / (self.ema_kimg * 1000)) if self.ema_kimg > 0 else 0.0
        generator = unwrapped(nets["generator"])
        with torch.no_grad():
            for average, current in zip(nets["generator_ema"].parameters(), generator.parameters()):
                average.lerp_(current, 1 - beta)
            for average, current in zip(nets["generator_ema"].buffers(), generator.buffers()):
                average.copy_(current)

    def picture_rows(self, nets: dict[str, nn.Module], batch: dict, out: dict) -> list[torch.Tensor]:
        """stylegan: reals (as shown at the current resolution) above generated faces; the other stages: the real
        faces, the 8 x 8 inputs (nearest), what E_l alone makes (fuse) and what the stage's latents make."""
        count = min(8, len(out["real"]))
        if "fake" in out:
            return [out["real"][:count].detach().float(), out["fake"][:count].detach().float().clamp(-1, 1)]
        rows = [out["real"][:count].float()]
        if "lr" in batch:
            rows.append(F.interpolate(batch["lr"][:count].float(), size=out["real"].shape[-2:], mode="nearest"))
        with torch.no_grad():
            draw = lambda z: nets["generator_ema"](z_plus=z[:count].detach(), noise="off")  # noqa: E731
            if "from_lr" in out:
                rows.append(draw(out["from_lr"]))
            rows.append(out["made"][:count].detach() if "made" in out else draw(out["latent"]))
        return [row.float().clamp(-1, 1) for row in rows]

    @torch.no_grad()
    def super_resolve(self, nets: dict[str, nn.Module], lr: torch.Tensor,
                      spectrogram: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(faces from the 8 x 8 inputs alone: G(E_l(lr)), faces from them and the speech: G(F(E_l, E_a)) or None),
        N x 3 x 128 x 128 in [-1, 1], drawn by the moving-average generator with noise off (official test)."""
        draw = lambda z: nets["generator_ema"](z_plus=z, noise="off").float().clamp(-1, 1)  # noqa: E731
        from_lr = nets["lr_encoder"](lr)
        if spectrogram is None:
            return draw(from_lr), None
        return draw(from_lr), draw(nets["fuser"](from_lr, nets["audio_encoder"](spectrogram)))

    def sample(self, nets: dict[str, nn.Module], inputs, output: str, device, **options) -> torch.Tensor:
        """The paper's figure row: the face (when a larger photo was given) | the 8 x 8 input (nearest) | from the
        input alone | from the input and the speech (the 4 s around the middle of --audio, when given)."""
        lr = from_uint8(inputs.lr[None]).to(device)
        spectrogram = None
        if inputs.audio is not None:
            middle = max(0, (len(inputs.audio) - SPECTROGRAM_SAMPLES) // 2)
            values = earsr_spectrogram(inputs.audio[middle:middle + SPECTROGRAM_SAMPLES]).values
            spectrogram = torch.from_numpy(values)[None, None].float().to(device)
        from_lr, fused = self.super_resolve(nets, lr, spectrogram)
        shown = [from_uint8(inputs.hr[None]).to(device)] if inputs.hr is not None else []
        shown += [F.interpolate(lr, size=from_lr.shape[-2:], mode="nearest"), from_lr]
        return torch.cat(shown + ([fused] if fused is not None else []))

    def evaluate(self, nets: dict[str, nn.Module], data, split: str, device, limit: int | None = None):
        """The paper's identity measure (closed or open set, by the split), PSNR and SSIM, beside E_l alone and
        bicubic: ``evaluation.py``."""
        return evaluation.evaluate(self, nets, data, split, device, limit)


def shrink(images: torch.Tensor, size: int, stretch: bool = True) -> torch.Tensor:
    """Faces shrunk to ``size`` as the 8 x 8 inputs were, differentiably: each image's values stretched from its
    minimum..maximum to the full range (scipy's byte scaling, ``stretch``), then torch's antialiased bicubic,
    within 0.3 grey levels of PIL's on real faces (tests)."""
    if stretch:
        low = images.flatten(1).amin(1)[:, None, None, None]
        high = images.flatten(1).amax(1)[:, None, None, None]
        images = torch.where(high > low, (images - low) / (high - low).clamp_min(1e-8) * 2 - 1, images)
    return F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False)


def _mirrored(images: torch.Tensor) -> torch.Tensor:
    """Each image flipped left-right with probability 1/2 (the official FFHQ ``mirror_augment``)."""
    flip = torch.rand(len(images), device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def _reals_at(images: torch.Tensor, lod: float) -> torch.Tensor:
    """Real images as the generator draws them at ``lod`` (official ``process_reals``): shown at the resolution
    lod's integer part leaves, faded towards half that resolution by lod's fraction (in every transition), then
    nearest-upsampled back to full size."""
    factor = 2 ** math.floor(lod)
    if factor > 1:
        images = F.avg_pool2d(images, factor)
    if lod % 1 > 0:
        lower = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2, mode="nearest")
        images = torch.lerp(images, lower, lod % 1)
    return F.interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images
