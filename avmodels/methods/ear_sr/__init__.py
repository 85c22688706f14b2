"""Ear-SR (Meishvili et al., CVPR 2020, "Learning to Have an Ear for Face Super-Resolution";
gmeishvili/ear_for_face_super_resolution, TF 1.13, test-only: its training was never released). An 8 x 8 face and
4 s of speech -> a 128 x 128 face, through the latent space (W+, 12 x 512) of a StyleGAN. Networks:
``networks.py``. Stages (README "Ear-SR"):

    stylegan   the official networks_stylegan.py trained as StyleGAN v1's training loop: non-saturating logistic
               loss, R1 on reals (gamma 10), Adam (0, 0.99), style mixing 0.9, a moving-average generator
               (half-life 10k images), progressive growing from 8 px (600k images per phase and fade)

    invert          E_h learns to invert the moving-average generator (noise off, as the official test): L1 and
                    VGG19 perceptual loss between a real face and G(E_h(face))
    invert_joint    E_h and that generator together, a regulariser keeping the generator's images of random
                    latents near those of its state when the stage began, its weight halved whenever the
                    reconstruction loss stops improving
    encoders_lr     E_l on one half of the speakers (split ``train_a``): its W+ towards E_h's, and 40 x L1 between
                    G(E_l(lr)) downsampled (torch's antialiased bicubic) and the 8 x 8 input
    encoders_audio  E_a on the other half (``train_b``): its W+ towards the mean of E_h(face) and E_h(mirrored face)
    fuse            F and E_a on all the training data: F's residual on E_l's W+ towards E_h's, with the same
                    downsampling consistency

The official code has no training; the later stages are written from the project's notes on the paper (README
"Ear-SR" says which choices are ours); every weight is in the recipe's ``losses`` tables. ``sample`` draws the
paper's figure row; ``evaluate`` the paper's identity measure (closed or open set, by the split) with PSNR and
SSIM, beside E_l alone and bicubic.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avmodels.data import split_batches, training_split
from avmodels.evaluation import Evaluation, split_samples
from avmodels.losses import load_vgg19, perceptual_loss
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
from avmodels.metrics import identity_accuracy, identity_similarity, psnr, speaker_identification, ssim
from avmodels.pictures import to_uint8
from avmodels.views import EARSR_ATTRIBUTES
from avprep.features.spectrogram import CLIP_SAMPLES as SPECTROGRAM_SAMPLES
from avprep.features.spectrogram import earsr_spectrogram

LOSS_DEFAULTS = {"r1": 10.0, "reconstruction": 1.0, "perceptual": 1.0, "latent": 1.0, "downsampling": 40.0}
ATTRIBUTE_GALLERY = 2000  # training faces the gender and age probes learn from, at most
GALLERY_PER_SPEAKER = 16  # training faces per speaker that name a closed-set test's faces
ENCODER_STAGES = ("invert", "invert_joint", "encoders_lr", "encoders_audio", "fuse")


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


class EarSR:
    name = "ear_sr"
    view = "ear_sr"
    inputs = ("lr",)  # and --audio, optional: without it only E_l's face is drawn
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
            "generator_init": Generator(self.resolution, width),  # invert_joint's fixed reference
            "regulariser": PlateauHalving(float(model.get("regulariser", 1.0)),
                                          int(model.get("regulariser_patience", 2000))),
        }
        for name in ("generator_ema", "generator_init"):
            self.networks[name].load_state_dict(self.networks["generator"].state_dict())
            self.networks[name].requires_grad_(False)
        self.vgg19_file, self.vgg = model.get("vgg19"), None

    def load_auxiliary(self, device) -> list[str]:
        """The frozen VGG19 of the inversion's perceptual loss, from ``model.vgg19`` (never checkpointed); the
        stylegan stage does without it."""
        if not self.vgg19_file:
            return [] if self.vgg19_file is None else ['model.vgg19 = "": the inversion\'s perceptual term is off']
        self.vgg = load_vgg19(self.vgg19_file).to(device)
        return []

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
        stage = getattr(ctx, "stage", None)
        if stage not in ENCODER_STAGES:
            raise KeyError(f"ear_sr has no stage {stage!r} (stylegan, {', '.join(ENCODER_STAGES)})")
        if stage.startswith("invert") and self.vgg19_file is None:
            raise ValueError('Ear-SR\'s inversion uses a VGG19 perceptual loss: set model.vgg19 = "vgg19.pth" (a '
                             'torchvision vgg19 state dict saved with torch.save), or model.vgg19 = "" to invert '
                             "without it")
        if stage == "invert_joint" and ctx.stage_step == 0 and ctx.micro_step == 0:
            with torch.no_grad():  # the generator as the stage finds it: what the regulariser holds it near
                nets["generator_init"].load_state_dict(_unwrapped(nets["generator_ema"]).state_dict())
        real, draw = batch["hr"], lambda w: nets["generator_ema"](w_plus=w, noise="off")  # noqa: E731
        out = {"real": real}
        if stage.startswith("invert"):
            out["latent"] = nets["hr_encoder"](real)
            if stage == "invert":
                out["made"] = draw(out["latent"])
                return out
            w = nets["generator_init"].mapping(torch.randn(len(real), LATENT, device=real.device))
            w = w[:, None].expand(-1, STYLES, -1)
            out["made"], out["drawn"] = draw(torch.cat([out["latent"], w])).split(len(real))  # one pass (DDP)
            out["drawn_before"] = nets["generator_init"](w_plus=w, noise="off")
            return out
        with torch.no_grad():
            out["target"] = nets["hr_encoder"](real)
            if stage == "encoders_audio":  # the identity, not the pose: the face and its mirror image agree
                out["target"] = (out["target"] + nets["hr_encoder"](real.flip(-1))) / 2
        if stage == "encoders_audio":
            out["latent"] = nets["audio_encoder"](batch["spectrogram"])
            with torch.no_grad():  # for the pictures only: the loss is on the latents
                out["made"] = draw(out["latent"])
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
        weight = lambda name: float(weights.get(name, LOSS_DEFAULTS[name]))  # noqa: E731
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
                total = total + weight("r1") / 2 * self.r1_every * terms["r1"]
            return total, {name: value.item() for name, value in terms.items()}
        if optimizer == "generator":
            adversarial = F.softplus(-nets["discriminator"](out["fake"], lod=out["lod"]).float()).mean()
            return adversarial, {"g_adversarial": adversarial.item(), "lod": out["lod"]}
        if optimizer in ("inversion", "lr_encoder", "audio_encoder", "fusion"):
            return self._encoder_loss(ctx.stage, nets, batch, out, weight)
        raise KeyError(f"ear_sr has no optimiser {optimizer!r} (discriminator, generator, inversion, lr_encoder, "
                       "audio_encoder, fusion)")

    def _encoder_loss(self, stage: str, nets, batch: dict, out: dict, weight) -> tuple[torch.Tensor, dict]:
        made, terms = out["made"].float(), {}
        if stage.startswith("invert"):
            terms["reconstruction"] = F.l1_loss(made, out["real"])
            if self.vgg is not None:
                terms["perceptual"] = perceptual_loss(self.vgg, made, out["real"])
        else:
            terms["latent"] = F.l1_loss(out["latent"].float(), out["target"].float())
        if stage in ("encoders_lr", "fuse"):  # the face made, shrunk as the input was, must be the input
            terms["downsampling"] = F.l1_loss(shrink(made, batch["lr"].shape[-1]), batch["lr"])
        total = sum(weight(name) * value for name, value in terms.items())
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
        generator = _unwrapped(nets["generator"])
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
        if "from_lr" in out:
            with torch.no_grad():
                rows.append(nets["generator_ema"](w_plus=out["from_lr"][:count], noise="off").float().clamp(-1, 1))
        return rows + [out["made"][:count].detach().float().clamp(-1, 1)]

    @torch.no_grad()
    def super_resolve(self, nets: dict[str, nn.Module], lr: torch.Tensor,
                      spectrogram: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(faces from the 8 x 8 inputs alone: G(E_l(lr)), faces from them and the speech: G(F(E_l, E_a)) or None),
        N x 3 x 128 x 128 in [-1, 1], drawn by the moving-average generator with noise off (official test)."""
        draw = lambda w: nets["generator_ema"](w_plus=w, noise="off").float().clamp(-1, 1)  # noqa: E731
        from_lr = nets["lr_encoder"](lr)
        if spectrogram is None:
            return draw(from_lr), None
        return draw(from_lr), draw(nets["fuser"](from_lr, nets["audio_encoder"](spectrogram)))

    def sample(self, nets: dict[str, nn.Module], inputs, output: str, device, **options) -> torch.Tensor:
        """The paper's figure row: the face (when a larger photo was given) | the 8 x 8 input (nearest) | from the
        input alone | from the input and the speech (the 4 s around the middle of --audio, when given)."""
        def tensor(image):
            return torch.tensor(image).permute(2, 0, 1)[None].float().to(device) / 127.5 - 1

        lr = tensor(inputs.lr)
        spectrogram = None
        if inputs.audio is not None:
            middle = max(0, (len(inputs.audio) - SPECTROGRAM_SAMPLES) // 2)
            values = earsr_spectrogram(inputs.audio[middle:middle + SPECTROGRAM_SAMPLES]).values
            spectrogram = torch.from_numpy(values)[None, None].float().to(device)
        from_lr, fused = self.super_resolve(nets, lr, spectrogram)
        shown = [tensor(inputs.hr)] if inputs.hr is not None else []
        shown += [F.interpolate(lr, size=from_lr.shape[-2:], mode="nearest"), from_lr]
        return torch.cat(shown + ([fused] if fused is not None else []))


    def evaluate(self, nets: dict[str, nn.Module], data, split: str, device, limit: int | None = None) -> Evaluation:
        """On ``split``: faces from the 8 x 8 inputs alone (``*_lr_only``: E_l), from the inputs and the speech
        (no suffix) and bicubic up-sampling (``*_bicubic``), against the real faces: identity (the nearest speaker
        by dlib descriptors, the paper's identity measure: on a closed-set split (speakers seen in training) among
        centroids of those speakers' training faces, on an open-set split among its own real faces' centroids;
        and the similarity to the sample's own face), PSNR and SSIM. The real faces' identity accuracy is the
        ceiling. The
        picture: real | 8 x 8 | bicubic | E_l | fused | the 8 x 8 input with the voice of the next sample of
        another speaker (the paper's mixing figure) | that speaker's real face."""
        real, low, speakers, spectrograms = [], [], [], []
        attributes = {name: [] for name in EARSR_ATTRIBUTES}
        for batch, i in split_samples(data, split, self.view, device, limit):
            real.append(batch["hr"][i])
            low.append(batch["lr"][i])
            spectrograms.append(batch["spectrogram"][i])
            speakers.append(int(batch["speaker"][i]))
            for name in EARSR_ATTRIBUTES:
                attributes[name].append(batch[name][i])
        real, low, spectrograms, speakers = (torch.stack(real), torch.stack(low), torch.stack(spectrograms),
                                             np.array(speakers))
        made = {"lr_only": [], "": []}
        for start in range(0, len(real), 16):
            from_lr, fused = self.super_resolve(nets, low[start:start + 16], spectrograms[start:start + 16])
            made["lr_only"].append(from_lr)
            made[""].append(fused)
        made = {name: torch.cat(parts) for name, parts in made.items()}
        made["bicubic"] = F.interpolate(low, size=real.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
        truth = to_uint8(real)
        info = json.loads((Path(data) / "dataset.json").read_text())
        closed = split in info["recipe"].get("closed_splits", ())
        if closed:  # speakers seen in training: named against their training faces
            gallery, gallery_speakers = _training_faces(data, self.view, set(speakers.tolist()))
        else:  # unseen speakers: only the split's own real faces can name them
            gallery, gallery_speakers = truth, speakers
        metrics = {"split": split, "set": "closed" if closed else "open", "samples": len(real),
                   "speakers_in_split": int(len(set(speakers.tolist()))), "identity_gallery_faces": len(gallery),
                   "identity_accuracy_real": identity_accuracy(truth, speakers, gallery, gallery_speakers)}
        for name, faces in made.items():
            suffix = f"_{name}" if name else ""
            faces = to_uint8(faces)
            metrics[f"identity_accuracy{suffix}"] = identity_accuracy(faces, speakers, gallery, gallery_speakers)
            metrics[f"identity_similarity{suffix}"] = identity_similarity(faces, truth)
            metrics[f"psnr{suffix}"] = psnr(truth, faces)
            metrics[f"ssim{suffix}"] = ssim(truth, faces)
        for name, values in attributes.items():
            if any(values):
                metrics.update(_attribute_accuracy(name, np.array(values), truth, made, data, self.view))
        voices = _other_speakers(speakers)
        with torch.no_grad():
            _, mixed = self.super_resolve(nets, low[:8], spectrograms[voices[:8]])
        rows = [real[:8], F.interpolate(low[:8], size=real.shape[-2:], mode="nearest"), made["bicubic"][:8],
                made["lr_only"][:8], made[""][:8], mixed, real[voices[:8]]]
        return Evaluation(metrics, [row.float() for row in rows])

def shrink(images: torch.Tensor, size: int) -> torch.Tensor:
    """Faces shrunk to ``size`` as the 8 x 8 inputs were (PIL's antialiased bicubic), differentiably: torch's
    antialiased bicubic, within 0.3 grey levels of PIL's on real faces (tests)."""
    return F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False)


def _attribute_accuracy(name: str, values: np.ndarray, truth: np.ndarray, made: dict, data, view: str) -> dict:
    """``<name>_accuracy*``: a probe (``avmodels.metrics.speaker_identification``'s CNN) trained on the training
    halves' real faces to name the attribute (each value a class), scored on this split's real faces (the
    ceiling) and on each kind of made face, over the samples whose value the training faces have."""
    faces, labels = _training_faces(data, view, field=name)
    known = labels != ""
    classes = sorted(set(labels[known].tolist()))
    kept = np.isin(values, classes)
    if len(classes) < 2 or not kept.any():
        return {}
    index = {value: k for k, value in enumerate(classes)}
    targets = np.array([index[value] for value in values[kept]])
    tests = {"real": (truth[kept], targets), **{kind: (to_uint8(faces_made)[kept], targets)
                                                for kind, faces_made in made.items()}}
    scores = speaker_identification(faces[known], np.array([index[v] for v in labels[known]]), tests, len(classes))
    return {f"{name}_accuracy{'_' + kind if kind else ''}": score for kind, score in scores.items()}


def _training_faces(data, view: str, speakers: set[int] | None = None, field: str = "speaker",
                    limit: int = ATTRIBUTE_GALLERY, per_speaker: int = GALLERY_PER_SPEAKER) -> tuple:
    """Real faces of the training splits (uint8) with each face's ``field``, at most ``limit``; with ``speakers``
    only theirs, at most ``per_speaker`` each, read until each has that many (a closed-set identity gallery)."""
    faces, values, counts = [], [], dict.fromkeys(speakers or (), 0)
    info = json.loads((Path(data) / "dataset.json").read_text())
    for batch in split_batches(data, training_split(info), view, "cpu", spectrogram=False):
        for i, speaker in enumerate(batch["speaker"].tolist()):
            if speakers is not None and counts.get(speaker, per_speaker) >= per_speaker:
                continue
            counts[speaker] = counts.get(speaker, 0) + 1
            faces.append(to_uint8(batch["hr"][i:i + 1]))
            values.append(batch[field][i] if field != "speaker" else speaker)
        if len(faces) >= limit or (speakers and min(counts.values()) >= per_speaker):
            break
    if not faces:
        raise ValueError(f"{data}: no training faces of the split's speakers ({training_split(info)})")
    return np.concatenate(faces)[:limit], np.array(values[:limit])


def _other_speakers(speakers: np.ndarray) -> np.ndarray:
    """For each sample, the next sample (cyclically) of another speaker; itself when the split has one speaker."""
    chosen = np.arange(len(speakers))
    for i, speaker in enumerate(speakers):
        others = [j for j in (np.arange(1, len(speakers)) + i) % len(speakers) if speakers[j] != speaker]
        chosen[i] = others[0] if others else i
    return chosen


def _unwrapped(network: nn.Module) -> nn.Module:
    return getattr(network, "module", network)


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
