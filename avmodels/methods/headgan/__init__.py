"""HeadGAN (Doukas et al., ICCV 2021, "HeadGAN: One-shot Neural Head Synthesis and Editing"; michaildoukas/headGAN):
a reference face re-rendered under a driver's 3DMM expression and pose (NMFC renders), with the driver's audio.
Networks: ``networks.py``. One stage, ``gan``, as the official ``train.py``:

    Each loaded clip gives T generator steps, one per window of 3 consecutive NMFC frames (the trainer's
    micro-batches, no recurrence between them) of T + 2 frames from a random start in the clip, as the official
    loader (``n_frames_total + n_frames_G - 1`` frames from a random offset); the discriminators step once every
    4 generator steps.
    Generator: hinge adversarial + 10 x feature matching (both image-D scales, every layer but the last) + 10 x
    VGG19 perceptual (relu1_1 .. relu5_1 weighted 1/32 .. 1) + 50 x L1 inside the face (where the NMFC render is
    not black), the VGG and masked L1 also on the warped reference, + 10 x L1 between the flow mask and the
    foreground mask; the mouth discriminator's hinge adversarial and feature matching on 64 x 64 crops around the
    mouth centre with the 300 audio features tiled. Discriminators: image D hinge + 0.5 x mouth D hinge.
    Adam 2e-4 (0.5, 0.999), batch 6, 6 epochs at full rate, then the rate drops by a quarter at each of the
    last 4 epochs (0.75, 0.5, 0.25, 0: ``hold = 0.6``, ``stairs = 4``, as the official per-epoch decay).

The sequence curriculum (T = 6, doubling every epoch from epoch 3, at most 48) runs on the frames the shards
hold: the shipped 6-frame clips give T = 4; shard with ``--set data.clip_frames=50`` for the official lengths.

Foreground masks: the official code segments every frame and the reference with a pretrained network that is
not available here; the mask is the union of the target's and the reference's NMFC renders (the fitted head)
dilated by ``model.mask_dilation`` of the image size, which covers the face and some hair but not the neck and
shoulders the segmenter includes. The VGG19 weights come from a user file (``model.vgg19``); without one,
training refuses unless ``model.vgg19 = ""``, which turns the VGG terms off.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avmodels.evaluation import Evaluation, Measures, split_samples
from avmodels.losses import perceptual_loss, real_and_fake, vgg19_from_setting
from avmodels.methods.base import Method
from avmodels.methods.headgan.networks import (
    AUDIO_FEATURES,
    NMFC_FRAMES,
    Generator,
    MultiscaleDiscriminator,
    init_weights,
)
from avmodels.methods.headgan.reenact import driven_nmfc
from avmodels.methods.headgan.view import view as shard_view
from avmodels.metrics import aed, akd, face_meshes, identity_similarity, landmarks68, psnr, ssim
from avmodels.pictures import from_uint8, to_uint8
from avmodels.progress import tracked
from avmodels.sampling import InputProblem
from avprep.morphable import apply_affine, load_default_model
from avprep.shard.sample import headgan_audio_features, placements

MOUTH_SIZE = 64  # the mouth discriminator's crop (official ROI_size)


class HeadGAN(Method):
    name = "headgan"
    stages = ("gan",)
    loss_terms = {"gan": ("adversarial", "feature_matching", "vgg", "masked_l1", "flow_mask", "mouth_adversarial",
                          "mouth_feature_matching", "mouth_discriminator")}
    view = staticmethod(shard_view)
    inputs = ("reference", "driving")
    outputs = ("video",)
    main_measures = {"akd": "lower", "l1": "lower"}
    driving_asr = "pocketsphinx"  # the driver's speech characters, when it has no transcript beside it

    def __init__(self, model: dict, dataset: dict):
        width = float(model.get("width", 1.0))
        self.audio = bool(model.get("audio", True))
        self.vgg19_file = model.get("vgg19")
        self.mask_dilation = float(model.get("mask_dilation", 0.06))
        self.curriculum_start = int(model.get("curriculum_start_epoch", 3))
        self.curriculum_max = int(model.get("curriculum_max_frames", 48))
        self.vgg = None
        self.networks = {
            "generator": Generator(width, audio=self.audio),
            "image_discriminator": MultiscaleDiscriminator(3 + 3, width),
            "mouth_discriminator": MultiscaleDiscriminator((AUDIO_FEATURES if self.audio else 0) + 3, width),
        }
        for network in self.networks.values():
            init_weights(network)

    def load_auxiliary(self, device) -> list[str]:
        """The frozen VGG19 of the perceptual loss, from ``model.vgg19`` (never checkpointed)."""
        self.vgg, notes = vgg19_from_setting(self.vgg19_file, device, "HeadGAN's generator loss",
                                             "train without the VGG terms")
        return notes

    def sequence_length(self, epoch: int, windows: int) -> int:
        """Generator steps per clip in ``epoch`` (0-based, the official ``n_frames_total``): 6, doubling every
        epoch from the official third (``niter_start = 3``), at most the clip's ``windows`` and
        ``curriculum_max_frames``."""
        doublings = max(0, epoch + 1 - self.curriculum_start + 1)
        return min(windows, self.curriculum_max, 6 * 2 ** doublings)

    def micro_batches(self, batch: dict, ctx) -> list[dict]:
        """One generator step per window of 3 consecutive NMFC frames of ``sequence_length`` + 2 frames from a
        random start in each clip (the official loader's random offset)."""
        missing = {"reference_nmfc", "mouth"} - set(batch)
        if missing:
            raise ValueError(f"HeadGAN reads {' and '.join(sorted(missing))} from the shards, which these lack: shard "
                             "again with the shipped headgan recipe (ref_nmfc.png, mouth.npy)")
        clips, frames = batch["frames"].shape[:2]
        span = self.sequence_length(ctx.epoch, frames - NMFC_FRAMES + 1) + NMFC_FRAMES - 1
        starts = torch.randint(0, frames - span + 1, (clips, 1))  # the CPU generator: checkpointed, so resumable
        chosen = (starts + torch.arange(span)).to(batch["frames"].device)
        rows = torch.arange(clips, device=chosen.device)[:, None]
        frames_of = lambda name: batch[name][rows, chosen]  # noqa: E731
        nmfc = (frames_of("nmfc") + 1) / 2  # NMFC renders in [0, 1], as the official loader
        real, audio, mouth = frames_of("frames"), frames_of("audio_features"), frames_of("mouth")
        reference = torch.cat([(batch["reference_nmfc"] + 1) / 2, batch["reference"]], dim=1)
        parts = []
        for last in range(NMFC_FRAMES - 1, span):
            window = nmfc[:, last - NMFC_FRAMES + 1:last + 1]
            parts.append({"nmfc": window.flatten(1, 2), "target_nmfc": window[:, -1], "real": real[:, last],
                          "reference": reference, "audio": audio[:, last], "mouth": mouth[:, last]})
        return parts

    def forward(self, nets: dict[str, nn.Module], batch: dict, ctx=None) -> dict:
        fake, warped, flow, mask = nets["generator"](batch["nmfc"], batch["reference"],
                                                     batch["audio"] if self.audio else None)
        return {"fake": fake, "warped": warped, "flow": flow, "flow_mask": mask}

    def loss(self, optimizer: str, nets: dict[str, nn.Module], batch: dict, out: dict, weights: dict[str, float],
             ctx=None) -> tuple[torch.Tensor, dict[str, float]]:
        real, fake, condition = batch["real"], out["fake"], batch["target_nmfc"]
        real_mouth, fake_mouth, audio = self._mouths(batch, fake)
        if optimizer == "discriminators":
            (real_scores, fake_scores) = real_and_fake(nets["image_discriminator"], (torch.cat([condition, real], 1),),
                                                       (torch.cat([condition, fake.detach()], 1),))
            (real_mouth_scores, fake_mouth_scores) = real_and_fake(
                nets["mouth_discriminator"], (_with(audio, real_mouth),), (_with(audio, fake_mouth.detach()),))
            terms = {"d_real": _hinge(real_scores, True), "d_fake": _hinge(fake_scores, False),
                     "d_mouth_real": _hinge(real_mouth_scores, True), "d_mouth_fake": _hinge(fake_mouth_scores, False)}
            total = (terms["d_real"] + terms["d_fake"]
                     + weights["mouth_discriminator"] * (terms["d_mouth_real"] + terms["d_mouth_fake"]))
            return total, {name: value.item() for name, value in terms.items()}
        if optimizer == "generator":
            (real_scores, fake_scores) = real_and_fake(nets["image_discriminator"], (torch.cat([condition, real], 1),),
                                                       (torch.cat([condition, fake], 1),))
            (real_mouth_scores, fake_mouth_scores) = real_and_fake(
                nets["mouth_discriminator"], (_with(audio, real_mouth),), (_with(audio, fake_mouth),))
            face = (condition.sum(dim=1, keepdim=True) > 0.01).float()
            terms = {"adversarial": -_mean_of_last(fake_scores),
                     "feature_matching": _feature_matching(real_scores, fake_scores),
                     "masked_l1": F.l1_loss(fake.float() * face, real * face) + F.l1_loss(out["warped"].float() * face,
                                                                                        real * face),
                     "flow_mask": F.l1_loss(out["flow_mask"].float(), self._foreground(batch)),
                     "mouth_adversarial": -_mean_of_last(fake_mouth_scores),
                     "mouth_feature_matching": _feature_matching(real_mouth_scores, fake_mouth_scores)}
            if self.vgg is not None:
                terms["vgg"] = (perceptual_loss(self.vgg, fake.float(), real)
                                + perceptual_loss(self.vgg, out["warped"].float(), real))
            total = sum(weights[name] * value for name, value in terms.items())
            return total, {f"g_{name}": value.item() for name, value in terms.items()}
        raise KeyError(f"headgan has no optimiser {optimizer!r} (generator, discriminators)")

    def _mouths(self, batch: dict, fake: torch.Tensor):
        """64 x 64 crops of the real and generated frames around each mouth centre (kept inside the frame, as
        the official ``get_ROI``), and the audio features (None without audio)."""
        size = batch["real"].shape[-1]
        centres = batch["mouth"].round().long().clamp(MOUTH_SIZE // 2, size - MOUTH_SIZE // 2)
        rows = torch.arange(MOUTH_SIZE, device=fake.device) - MOUTH_SIZE // 2
        ys = (centres[:, 1, None] + rows).clamp(0, size - 1)
        xs = (centres[:, 0, None] + rows).clamp(0, size - 1)
        crop = lambda images: images[torch.arange(len(images), device=images.device)[:, None, None, None],  # noqa: E731
                                     torch.arange(3, device=images.device)[None, :, None, None],
                                     ys[:, None, :, None], xs[:, None, None, :]]
        return crop(batch["real"]), crop(fake), batch["audio"] if self.audio else None

    def _foreground(self, batch: dict) -> torch.Tensor:
        """The flow mask's target: where the target's or the reference's head render is, dilated."""
        heads = torch.stack([batch["target_nmfc"].sum(1), batch["reference"][:, :3].sum(1)], 1) > 0.01
        union = heads.any(dim=1, keepdim=True).float()
        radius = max(1, int(round(self.mask_dilation * union.shape[-1])))
        return F.max_pool2d(union, 2 * radius + 1, stride=1, padding=radius)

    def picture_rows(self, nets: dict[str, nn.Module], batch: dict, out: dict) -> list[torch.Tensor]:
        """The last window of the batch: NMFC, real frames, generated frames, warped references."""
        count = min(8, len(out["fake"]))
        return [batch["target_nmfc"][:count] * 2 - 1, batch["real"][:count], out["fake"][:count].detach().float(),
                out["warped"][:count].detach().float()]


    @torch.no_grad()
    def reenact(self, nets: dict[str, nn.Module], reference: torch.Tensor, reference_nmfc: torch.Tensor,
                nmfc: torch.Tensor, audio: torch.Tensor, chunk: int = 8, progress: bool = False) -> torch.Tensor:
        """(T, 3, S, S) frames in [-1, 1] of the (3, S, S) reference in [-1, 1] with its NMFC in [0, 1], driven by
        (T, 3, S, S) NMFCs in [0, 1] and (T, 300) audio features: frame t from NMFCs t-2..t, the first repeated
        before the start (official ``reenact.py``), so there are as many frames as NMFCs; ``progress``: a bar of
        the chunks of ``chunk`` frames."""
        padded = torch.cat([nmfc[:1].expand(NMFC_FRAMES - 1, -1, -1, -1), nmfc])
        windows = padded.unfold(0, NMFC_FRAMES, 1).permute(0, 4, 1, 2, 3).flatten(1, 2)  # (T, 9, S, S)
        condition = torch.cat([reference_nmfc, reference])[None]
        frames = []
        starts = range(0, len(windows), chunk)
        for start in tracked(starts, len(starts), f"reenacting {len(windows)} frames") if progress else starts:
            part = windows[start:start + chunk]
            frames.append(nets["generator"](part, condition.expand(len(part), -1, -1, -1),
                                            audio[start:start + chunk] if self.audio else None)[0].float())
        return torch.cat(frames)

    def sample(self, nets: dict[str, nn.Module], inputs, output: str, device, **options) -> torch.Tensor:
        """The reference face with the driving video's expressions, head motion and voice: the driver's 3DMM
        expression and pose (its camera adapted to the reference) drawn with the reference's identity."""
        video, recipe = inputs.driving, inputs.recipe
        frames = inputs.driving_frames()  # at the model's rate, whatever the driver's
        points = video.array("landmarks")
        meshes = np.stack([apply_affine(points[f], p) for f, p in zip(frames, placements(video, frames, recipe))])
        try:
            reference_nmfc, nmfc = driven_nmfc(load_default_model(), inputs.reference.mesh, meshes, recipe.image_size)
        except ValueError as error:  # no frame of the driver has a face
            raise InputProblem(f"--driving: {error}") from None
        tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array)).float().to(device)  # noqa: E731
        reference = from_uint8(inputs.reference.image).to(device)
        return self.reenact(nets, reference, tensor(reference_nmfc).permute(2, 0, 1), tensor(nmfc).permute(0, 3, 1, 2),
                            tensor(headgan_audio_features(video, frames)), progress=True)

    def evaluate(self, nets: dict[str, nn.Module], data, split: str, device, limit: int | None = None) -> Evaluation:
        """Self-reenactment on ``split`` (the paper's protocol): each clip made from its reference frame and its
        own NMFCs and audio, against its real frames: L1 (0-255), PSNR, SSIM, identity similarity to the
        reference (dlib descriptors; the real frames' beside), AKD (dlib's 68 points) and AED (morphable-model
        expressions of MediaPipe meshes). The reference held still scores the ``*_baseline`` floor of each. Cross-
        identity: the first clips driven by their own faces' fitted expressions and poses, drawn with another
        speaker's reference (side-by-side MP4s: reference | driver | generated)."""
        measures, rows, videos, others = Measures(), [], [], []
        for batch, i in split_samples(data, split, self.view, device, limit):
            reference, reference_nmfc = batch["reference"][i], (batch["reference_nmfc"][i] + 1) / 2
            made = self.reenact(nets, reference, reference_nmfc, (batch["nmfc"][i] + 1) / 2,
                                batch["audio_features"][i])
            real, fake = to_uint8(batch["frames"][i]), to_uint8(made)
            still = np.repeat(to_uint8(reference[None]), len(real), 0)
            real_points, real_meshes = landmarks68(real), face_meshes(real)
            for suffix, frames, distinct in (("", fake, len(fake)), ("_baseline", still, 1)):
                measures.add("l1" + suffix, np.abs(frames.astype(np.float64) - real).mean())
                measures.add("psnr" + suffix, psnr(real, frames))
                measures.add("ssim" + suffix, ssim(real, frames))
                copies = len(frames) // distinct  # the still reference is one image: detected once
                measures.add("akd" + suffix, akd(real_points, np.repeat(landmarks68(frames[:distinct]), copies, 0)))
                measures.add("aed" + suffix, aed(real_meshes, np.repeat(face_meshes(frames[:distinct]), copies, 0)))
            measures.add("identity_similarity", identity_similarity(fake, still))
            measures.add("identity_similarity_real", identity_similarity(real, still))
            sound = batch["audio"][i].cpu().numpy() if "audio" in batch else np.zeros(1, np.float32)
            speaker = int(batch["speaker"][i])
            other = next((o for o in others if o[0] != speaker), None)
            if len(videos) < 2:
                videos.append((batch["key"][i], real, fake, sound))
            if other is not None and len(videos) < 5 and np.isfinite(real_meshes).all(axis=(1, 2)).any():
                cross = self._cross_identity(nets, other, real, real_meshes, batch["audio_features"][i],
                                             batch["key"][i], sound, device)
                videos += [cross] if cross is not None else []
            if len(others) < 4 and all(o[0] != speaker for o in others):
                others.append((speaker, batch["key"][i], still[0], reference))
            if not rows:
                rows = [batch["nmfc"][i][:8], batch["frames"][i][:8], made[:8]]
            measures.samples += 1
        size = real.shape[1]  # the shards' crop: 256 px as the paper's
        protocols = {"l1": f"the paper's self-reenactment: mean absolute difference, 0-255, at {size} px",
                     "psnr": "true PSNR of the colour frames", "ssim": "ATVGnet's: colour, resized to 256 px",
                     "akd": f"the paper's AKD: mean distance of dlib's 68 points, pixels of the {size} px crop",
                     "aed": "the paper's AED with avprep's 3DMM fitted to MediaPipe meshes (not its own fit)",
                     "identity_similarity": "CSIM with dlib descriptors against the reference (the paper: ArcFace)"}
        baselines = {"": "the floor: the reference frame held still, scored the same way"}
        return Evaluation(measures.metrics(split, baselines, protocols=protocols), rows, videos)

    def _cross_identity(self, nets, other: tuple, real: np.ndarray, real_meshes: np.ndarray, audio: torch.Tensor,
                        key: str, sound: np.ndarray, device) -> tuple:
        """(name, reference | driver frames, generated frames, sound): ``real`` driving ``other``'s reference;
        None when MediaPipe finds no face in that reference."""
        _, other_key, image, reference = other
        [reference_mesh] = face_meshes(image[None])
        if not np.isfinite(reference_mesh).all():
            return None
        reference_nmfc, nmfc = driven_nmfc(load_default_model(), reference_mesh, real_meshes, image.shape[0])
        tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array)).float().to(device)  # noqa: E731
        made = self.reenact(nets, reference, tensor(reference_nmfc).permute(2, 0, 1), tensor(nmfc).permute(0, 3, 1, 2),
                            audio)
        shown = np.concatenate([np.repeat(image[None], len(real), 0), real], axis=2)
        return f"cross-{key}-drives-{other_key}", shown, to_uint8(made), sound


def _with(audio: torch.Tensor | None, mouths: torch.Tensor) -> torch.Tensor:
    """The mouth discriminator's input: the audio features tiled over the crop, then the crop."""
    if audio is None:
        return mouths
    return torch.cat([audio[:, :, None, None].expand(-1, -1, *mouths.shape[-2:]).to(mouths.dtype), mouths], 1)


def _hinge(scales: list[list[torch.Tensor]], real: bool) -> torch.Tensor:
    """The official hinge loss of a multi-scale discriminator, averaged over its scales."""
    sign = 1.0 if real else -1.0
    return sum(F.relu(1 - sign * outputs[-1].float()).mean() for outputs in scales) / len(scales)


def _mean_of_last(scales: list[list[torch.Tensor]]) -> torch.Tensor:
    return sum(outputs[-1].float().mean() for outputs in scales) / len(scales)


def _feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between the discriminator's intermediate features on real (held fixed) and generated inputs, every
    layer but the last, weighted 4 / (layers + 1) and 1 / scales as the official."""
    total = 0.0
    for real_outputs, fake_outputs in zip(real, fake):
        for r, f in zip(real_outputs[:-1], fake_outputs[:-1]):
            total = total + F.l1_loss(f.float(), r.detach().float()) * (4 / len(real_outputs)) / len(real)
    return total
