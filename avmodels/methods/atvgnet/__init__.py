"""ATVGnet (Chen et al., CVPR 2019, "Hierarchical Cross-Modal Talking Face Generation with Dynamic Pixel-Wise
Loss"; lelechen63/ATVGnet): audio -> landmarks (AT-net) -> talking video (VG-net), trained in two stages.

    at_net   MSE between AT-net's 6 PCA coefficients per frame and those of the true landmarks; AT-net reads the
             example frame's coefficients and each frame's 28 x 12 MFCC window. Adam 2e-4 (0.5, 0.999), batch 16,
             10 epochs. No images are read.
    vg_net   on the true landmarks. D: BCE(D(real), 1) + BCE(D(fake), 0) + MSE of its landmark regression on
             real and fake frames, the mouth's y-coordinates weighted 100. G: 10 x mean(|fake - real| x
             (attention.detach() + 0.5)) + BCE(D(fake), 1) + the same masked landmark MSE. Adam 2e-4 (0.5,
             0.999), batch 10, 5 epochs.

The first release of ``vgnet.py`` (a9178e3; fixed upstream in fee4e74) called the discriminator on
``fake.detach()`` in the generator step, so only the weighted L1 trained the generator; the paper trains it with
all three terms. That is the default; ``model.detach_fake_in_generator = true`` reproduces the 2018 commit. BCE
is taken on logits (the official sigmoid of the mean of the per-frame decisions, fused), which bf16 autocast
accepts.

Landmarks live in a pose-free space (``landmarks.py``): the mean shape and a 6-component PCA are fitted on the
training split before the first stage and kept in the ``landmark_pca`` buffers. Sampling scales coefficients 1-5
by 2 x [1.1 .. 1.5], as the official demo does (``--boost 0`` turns it off); evaluation does not, since the boost
was tuned to the official PCA's components and these are refitted. In both, VG-net reads the example landmarks
projected through the PCA, as the demo passes them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avmodels.data import split_batches
from avmodels.evaluation import Evaluation, Measures, split_samples
from avmodels.losses import bce, real_and_fake
from avmodels.methods.atvgnet.landmarks import LandmarkPCA
from avmodels.methods.atvgnet.networks import LANDMARKS, ATNet, GLDiscriminator, VGNet
from avmodels.methods.atvgnet.view import view as shard_view
from avmodels.methods.base import Method, StepContext
from avmodels.metrics import cpbd, landmarks68, lmd, psnr, psnr_release, ssim
from avmodels.pictures import area_resized, from_uint8, to_uint8
from avprep.shard.sample import audio_mfcc_windows

MOUTH_Y = slice(2 * 48 + 1, LANDMARKS, 2)  # y of points 48-67 in the flat (x0, y0, x1, y1, ...) vector
SYNC_MAX_LAG = 3  # a 16-frame clip holds enough frames for lags of up to 3 (avprep.face.sync's rule)


class ATVGnet(Method):
    name = "atvgnet"
    stages = ("at_net", "vg_net")
    loss_terms = {"at_net": ("coefficients",), "vg_net": ("pixel", "adversarial", "landmarks", "mouth")}
    view = staticmethod(shard_view)
    inputs = ("audio", "reference")
    outputs = ("video",)
    main_measures = {"lmd": "lower", "lmd_from_true_landmarks": "lower"}
    sample_options = {"boost": (1, "1: scale PCA coefficients 1-5 by 2 x [1.1 .. 1.5] as the official demo; 0: off")}

    def __init__(self, model: dict, dataset: dict):
        self.image_size = int(model.get("image_size", 128))
        self.pca_frames = int(model.get("pca_frames", 50000))
        self.detach_fake = bool(model.get("detach_fake_in_generator", False))
        self.boost = torch.tensor([2 * float(b) for b in model.get("sample_pca_boost", [1.1, 1.2, 1.3, 1.4, 1.5])])
        width = int(model.get("width", 64))
        self.networks = {
            "at_net": ATNet(),
            "vg_net": VGNet(self.image_size, width, recur_over=model.get("recur_over", "time")),
            "discriminator": GLDiscriminator(self.image_size, width),
            "landmark_pca": LandmarkPCA(int(model.get("pca_components", 6))),
        }

    @torch.no_grad()
    def begin_stage(self, nets: dict[str, nn.Module], data, ctx: StepContext) -> None:
        """The mean shape and landmark PCA from the training split's landmarks, once, before the first stage
        (checkpoints keep them in the ``landmark_pca`` buffers)."""
        pca = nets["landmark_pca"]
        if bool(pca.fitted):
            return
        points, count, split = [], 0, ctx.split
        for batch in split_batches(data, split, self.view, "cpu", images=False):
            frames = torch.cat([batch["example_landmarks"][:, None], batch["landmarks"]], dim=1).flatten(0, 1)
            points.append(frames)
            count += len(frames)
            if count >= self.pca_frames:
                break
        if not points:
            raise ValueError(f"{data}: the {split} split has no samples to fit the landmark PCA on")
        pca.fit(torch.cat(points)[: self.pca_frames].to(pca.mean.device))

    def forward(self, nets: dict[str, nn.Module], batch: dict, ctx=None) -> dict:
        """AT-net's coefficients for the target frames; with images in the batch (the vg_net stage), also the
        frames VG-net makes from the true landmarks."""
        pca = nets["landmark_pca"]
        with torch.no_grad():
            example, targets = pca.normalise(batch["example_landmarks"]), pca.normalise(batch["landmarks"])
        if "frames" not in batch:
            return {"coefficients": nets["at_net"](pca.project(example), batch["mfcc"]),
                    "true_coefficients": pca.project(targets)}
        fake, attention, colour, _ = nets["vg_net"](self._resize(batch["reference"]), targets, example)
        return {"fake": fake, "attention": attention, "colour": colour, "real": self._resize(batch["frames"]),
                "example": example, "targets": targets}

    def loss(self, optimizer: str, nets: dict[str, nn.Module], batch: dict, out: dict, weights: dict[str, float],
             ctx=None) -> tuple[torch.Tensor, dict[str, float]]:
        if optimizer == "at_net":
            error = F.mse_loss(out["coefficients"].float(), out["true_coefficients"])
            return weights["coefficients"] * error, {"at_mse": error.item()}
        discriminator, mouth = nets["discriminator"], weights["mouth"]
        if optimizer == "discriminator":
            (real_logit, real_landmarks), (fake_logit, fake_landmarks) = real_and_fake(
                discriminator, (out["real"], out["example"]), (out["fake"].detach(), out["example"]))
            terms = {"d_real": bce(real_logit, 1.0), "d_fake": bce(fake_logit, 0.0),
                     "d_landmarks_real": _masked_mse(real_landmarks, out["targets"], mouth),
                     "d_landmarks_fake": _masked_mse(fake_landmarks, out["targets"], mouth)}
            return sum(terms.values()), {name: value.item() for name, value in terms.items()}
        if optimizer == "generator":
            fake = out["fake"].detach() if self.detach_fake else out["fake"]
            logit, landmarks = discriminator(fake, out["example"])
            terms = {"pixel": (torch.abs(out["fake"].float() - out["real"]) * (out["attention"].detach() + 0.5)).mean(),
                     "adversarial": bce(logit, 1.0), "landmarks": _masked_mse(landmarks, out["targets"], mouth)}
            total = sum(weights[name] * value for name, value in terms.items())
            return total, {f"g_{name}": value.item() for name, value in terms.items()}
        raise KeyError(f"atvgnet has no optimiser {optimizer!r} (at_net, discriminator, generator)")

    def picture_rows(self, nets: dict[str, nn.Module], batch: dict, out: dict) -> list[torch.Tensor]:
        """vg_net: the first clip's real frames above its generated ones; at_net: true landmarks above AT-net's."""
        if "fake" in out:
            return [out["real"][0], out["fake"][0].detach()]
        pca = nets["landmark_pca"]
        return [draw_landmarks(pca.reconstruct(out["true_coefficients"][0])),
                draw_landmarks(pca.reconstruct(out["coefficients"][0].detach().float()))]

    @torch.no_grad()
    def talk(self, nets: dict[str, nn.Module], reference: torch.Tensor, reference_landmarks: torch.Tensor,
             mfcc: torch.Tensor, boost: bool) -> torch.Tensor:
        """The whole method: (B, 3, S, S) references, their (B, 68, 2) landmarks and (B, T, 28, 12) MFCC windows
        -> (B, T, 3, S, S) frames in [-1, 1], through AT-net's landmarks (``boost``: the demo's coefficient
        scaling). VG-net reads the example landmarks as the demo gives them: projected through the PCA."""
        pca = nets["landmark_pca"]
        example = pca.project(pca.normalise(reference_landmarks))
        coefficients = nets["at_net"](example, mfcc).float()
        if boost:
            coefficients[..., 1:6] *= self.boost.to(coefficients.device)
        return nets["vg_net"](self._resize(reference), pca.reconstruct(coefficients), pca.reconstruct(example))[0]

    def sample(self, nets: dict[str, nn.Module], inputs, output: str, device, boost: int = 1) -> torch.Tensor:
        """A talking video of the reference face saying the audio: one frame per frame time at ``inputs.fps``."""
        mfcc = torch.from_numpy(audio_mfcc_windows(inputs.audio, inputs.recipe, inputs.fps, inputs.frames)).float()
        reference = from_uint8(inputs.reference.image)
        landmarks = torch.from_numpy(inputs.reference.landmarks68).float()
        return self.talk(nets, reference[None].to(device), landmarks[None].to(device), mfcc[None].to(device),
                         bool(boost))[0].float()

    def evaluate(self, nets: dict[str, nn.Module], data, split: str, device, limit: int | None = None) -> Evaluation:
        """The paper's measures on ``split``, the whole method (audio -> landmarks -> video, without the demo's
        boost) against the real frames, the example being the first target frame (the official test loader):
        LMD (dlib's mouth points), SSIM, PSNR and CPBD of targets 2-16 (the first is the example the model is
        given: scored, it flatters every model and makes the held-still floor's PSNR infinite), and the sync of
        lips and audio; VG-net alone from the true landmarks beside it; CPBD and sync also on the real frames (the
        ceiling); the example and its landmarks held still, the floor."""
        measures, rows, videos = Measures(), [], []
        for batch, i in split_samples(data, split, self.view, device, limit):
            if i == 0:
                from_audio = self.talk(nets, batch["reference"], batch["example_landmarks"], batch["mfcc"],
                                       boost=False).float()
                with torch.no_grad():
                    out = self.forward(nets, batch)  # VG-net from the true landmarks, the real frames at its size
            clip, spoken = to_uint8(out["real"][i]), to_uint8(from_audio[i])
            clip_points = landmarks68(clip)
            real_frames, real_points = clip[1:], clip_points[1:]  # target 1 is the example
            still = np.repeat(clip[:1], len(real_frames), 0)
            baseline = _frame_measures(real_frames, real_points, still, np.repeat(clip_points[:1], len(still), 0))
            for suffix, fake_frames in (("", spoken[1:]), ("_from_true_landmarks", to_uint8(out["fake"][i])[1:])):
                measures.add_beside_floor(
                    _frame_measures(real_frames, real_points, fake_frames, landmarks68(fake_frames)), baseline, suffix)
                measures.add("cpbd" + suffix, np.nanmean([cpbd(frame) for frame in fake_frames]))
            measures.add("cpbd_real", np.nanmean([cpbd(frame) for frame in real_frames]))
            if "audio" in batch:
                audio, fps = batch["audio"][i].cpu().numpy(), float(batch["fps"][i])
                measures.add_sync(spoken, clip, audio, fps, SYNC_MAX_LAG)
                if len(videos) < 3:
                    videos.append((batch["key"][i], clip, spoken, audio))
            if not rows:
                rows = [out["real"][i][:8], from_audio[i][:8]]
            measures.samples += 1
        size = self.image_size
        protocols = {"lmd": f"the release's: the 20 centred mouth distances summed, dlib points at {size} px",
                     "lmd_per_point": f"their mean (the scale the paper's table implies), at {size} px",
                     "ssim": "the release's: colour, both frames resized to 256 px (INTER_AREA)",
                     "psnr": f"true PSNR of the colour frames at {size} px",
                     "psnr_release": "the release's psnr_f: grey after a 256 px INTER_AREA resize, uint8 wraparound",
                     "frames": "targets 2-16 of each clip (the first target is the example: left out)"}
        baselines = {"": "the floor: the example frame (the first target) and its landmarks held still for the other "
                         "15 targets, scored the same way"}
        return Evaluation(measures.metrics(split, baselines, protocols=protocols), rows, videos)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        """Shards hold 128 px crops; a smaller model reads them area-downsampled."""
        return area_resized(images, self.image_size)


def _frame_measures(real: np.ndarray, real_points: np.ndarray, frames: np.ndarray, points: np.ndarray) -> dict:
    """LMD (summed and per point), SSIM, PSNR and the release's PSNR of ``frames`` against the real frames."""
    return {"lmd": lmd(real_points, points), "lmd_per_point": lmd(real_points, points, per_point=True),
            "ssim": ssim(real, frames), "psnr": psnr(real, frames), "psnr_release": psnr_release(real, frames)}


def _masked_mse(predicted: torch.Tensor, true: torch.Tensor, mouth: float) -> torch.Tensor:
    """The official landmark loss: MSE of both vectors multiplied by a mask of 1, and ``mouth`` on the mouth's y."""
    mask = torch.ones(LANDMARKS, device=true.device)
    mask[MOUTH_Y] = mouth
    return F.mse_loss(predicted.float() * mask, true * mask)


def draw_landmarks(flat: torch.Tensor, size: int = 128) -> torch.Tensor:
    """(T, 136) normalised landmarks as (T, 3, size, size) pictures in [-1, 1]: dark points on white."""
    import cv2

    points = flat.detach().float().cpu().view(-1, 68, 2).numpy()
    scale = size / (2 * max(float(np.abs(points).max()), 1e-6)) * 0.9
    pictures = np.full((len(points), size, size, 3), 255, np.uint8)
    for picture, shape in zip(pictures, points):
        for x, y in shape * scale + size / 2:
            cv2.circle(picture, (int(round(x)), int(round(y))), 1, (40, 40, 40), -1)
    return from_uint8(pictures)
