"""Wav2Pix (Duarte et al., ICASSP 2019; imatge-upc/wav2pix): a face from one second of speech.

A SEGAN-style encoder turns 16000 raw samples into a 128-d speech embedding z; an auxiliary classifier names the
speaker from z; a spectral-norm DCGAN generator draws the face from z; a spectral-norm discriminator scores a face
given z. Facts from the official code (shared/reference/methods.md), parameter counts asserted by the tests:

    128x128: speech encoder 11,495,424 + speaker classifier 28,230 (10 speakers) + image generator 13,241,344
             = 24,764,998; discriminator 11,162,624
    64x64:   generator side 15,327,814 in total; discriminator 2,765,824

Losses (LSGAN): D: mse(D(fake), 0) + mse(D(real), 0.9) + mse(D(wrong face, another speaker), 0).
G: mse(D(fake), 1) + 100 x feature matching (batch means of D's 4x4 features, fake vs real) + 50 x L1(fake, real)
+ 20 x cross-entropy(speaker). The weights are the recipe's ``losses`` table.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from avmodels.data import split_batches
from avmodels.evaluation import Evaluation, described_baselines, same_speaker_pairs, training_faces
from avmodels.methods.base import Method
from avmodels.methods.wav2pix.view import AUDIO_SAMPLES, prepared_audio
from avmodels.methods.wav2pix.view import view as shard_view
from avmodels.metrics import (
    dlib_detectability,
    face_detectability,
    identity_accuracy,
    identity_similarity,
    speaker_identification,
)
from avmodels.pictures import area_resized, from_uint8, to_uint8
from avmodels.progress import tracked
from avprep.shard.folder import ShardDir

EMBEDDING = 128
GALLERY = 5000  # real training faces kept for the speaker probe and the identity gallery, at most
EVAL_BATCH = 32  # faces generated at once in evaluation
ENCODER_CHANNELS = (1, 16, 32, 128, 256, 512, 1024)


class SpeechEncoder(nn.Module):
    """1 s of 16 kHz audio (peak-normalised, pre-emphasised: ``prepared_audio``) -> z (128).

    Six strided 1-D convolutions take 16000 samples to 4 x 1024, then three linear layers.
    """

    def __init__(self, embedding: int = EMBEDDING):
        super().__init__()
        layers = []
        for channels_in, channels_out in zip(ENCODER_CHANNELS, ENCODER_CHANNELS[1:]):
            layers += [nn.ConstantPad1d((6, 7), 0.0), nn.Conv1d(channels_in, channels_out, 15, stride=4),
                       nn.BatchNorm1d(channels_out), nn.LeakyReLU(0.3)]
        self.convolutions = nn.Sequential(*layers)
        self.project = nn.Sequential(nn.Linear(4 * 1024, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                     nn.Linear(128, embedding))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        features = self.convolutions(audio.unsqueeze(1))
        return self.project(features.flatten(1))


class SpeakerClassifier(nn.Module):
    """The auxiliary head that makes z carry identity: z -> speaker logits."""

    def __init__(self, speakers: int, embedding: int = EMBEDDING):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(embedding, 200), nn.BatchNorm1d(200), nn.LeakyReLU(0.2),
                                    nn.Linear(200, speakers), nn.BatchNorm1d(speakers))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class Generator(nn.Module):
    """z -> image in [-1, 1]: transposed convolutions from 1x1 to 4x4, then doubling up to ``image_size``."""

    def __init__(self, image_size: int = 128, embedding: int = EMBEDDING, dropout: float = 0.5):
        super().__init__()
        channels = [embedding] + _pyramid(image_size)[::-1] + [3]
        layers = []
        for i, (channels_in, channels_out) in enumerate(zip(channels, channels[1:])):
            first, last = i == 0, i == len(channels) - 2
            layers.append(spectral_norm(nn.ConvTranspose2d(channels_in, channels_out, 4, stride=1 if first else 2,
                                                           padding=0 if first else 1, bias=False)))
            layers += [nn.Tanh()] if last else [nn.Dropout(dropout), nn.ReLU()]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z[:, :, None, None])


class Discriminator(nn.Module):
    """(image, z) -> (score, 4x4 features). Strided convolutions down to 4x4, z tiled and concatenated there."""

    def __init__(self, image_size: int = 128, embedding: int = EMBEDDING):
        super().__init__()
        channels = [3] + _pyramid(image_size)
        layers = []
        for channels_in, channels_out in zip(channels, channels[1:]):
            layers += [spectral_norm(nn.Conv2d(channels_in, channels_out, 4, stride=2, padding=1, bias=False)),
                       nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.score = spectral_norm(nn.Conv2d(channels[-1] + embedding, 1, 4, bias=False))

    def forward(self, image: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(image)
        tiled = z[:, :, None, None].expand(-1, -1, *features.shape[2:])
        return self.score(torch.cat([features, tiled], 1)).flatten(), features


def _pyramid(image_size: int) -> list[int]:
    """Channels from the first strided layer to the 4x4 one: 64, 128, ... (five levels at 128, four at 64)."""
    levels = math.log2(image_size / 4)
    if image_size < 8 or levels != int(levels):
        raise ValueError(f"wav2pix image_size must be a power of two >= 8 (the official code: 64 or 128), "
                         f"got {image_size}")
    return [64 * 2 ** i for i in range(int(levels))]


class Wav2Pix(Method):
    """The method as the trainer sees it: networks, the step's shared forward, each optimiser's loss, pictures."""

    name = "wav2pix"
    stages = ("gan",)
    loss_terms = {"gan": ("adversarial", "feature_matching", "l1", "speaker")}
    view = staticmethod(shard_view)
    inputs = ("audio",)
    main_measures = {"identity_accuracy": "higher", "speaker_id_accuracy": "higher"}
    outputs = ("image", "video")  # faces from 1 s windows (PNG), or a face for every frame (MP4 with the speech)
    sample_options = {"every": (1.0, "PNG: seconds between the starts of successive 1 s windows"),
                      "limit": (16, "PNG: at most this many faces")}

    def __init__(self, model: dict, dataset: dict):
        self.image_size = int(model.get("image_size", 128))
        self.real_label = float(model.get("real_label", 0.9))
        self.speakers = speakers = len(dataset["speakers"])
        self.networks = {
            "speech_encoder": SpeechEncoder(),
            "speaker_classifier": SpeakerClassifier(speakers),
            "generator": Generator(self.image_size, dropout=float(model.get("dropout", 0.5))),
            "discriminator": Discriminator(self.image_size),
        }

    def forward(self, nets: dict[str, nn.Module], batch: dict, ctx=None) -> dict:
        """What both optimisers' losses read: z, speaker logits and the generated faces."""
        z = nets["speech_encoder"](batch["audio"])
        return {"z": z, "speaker_logits": nets["speaker_classifier"](z), "fake": nets["generator"](z),
                "real": self._resize(batch["image"]), "wrong": self._resize(batch["wrong"])}

    def loss(self, optimizer: str, nets: dict[str, nn.Module], batch: dict, out: dict,
             weights: dict[str, float], ctx=None) -> tuple[torch.Tensor, dict[str, float]]:
        discriminator = nets["discriminator"]
        if optimizer == "discriminator":
            z = out["z"].detach()
            images = torch.cat([out["fake"].detach(), out["real"], out["wrong"]])
            scores = discriminator(images, z.repeat(3, 1))[0].float().chunk(3)
            fake, real, wrong = (F.mse_loss(score, torch.full_like(score, target))
                                 for score, target in zip(scores, (0.0, self.real_label, 0.0)))
            return fake + real + wrong, {"d_fake": fake.item(), "d_real": real.item(), "d_wrong": wrong.item()}
        if optimizer == "generator":
            scores, features = discriminator(torch.cat([out["fake"], out["real"]]), out["z"].repeat(2, 1))
            fake_score = scores.float().chunk(2)[0]
            fake_features, real_features = features.float().chunk(2)
            terms = {
                "adversarial": F.mse_loss(fake_score, torch.ones_like(fake_score)),
                "feature_matching": F.mse_loss(fake_features.mean(0), real_features.detach().mean(0)),
                "l1": F.l1_loss(out["fake"].float(), out["real"]),
                "speaker": F.cross_entropy(out["speaker_logits"].float(), batch["speaker"]),
            }
            total = sum(weights[name] * value for name, value in terms.items())
            return total, {f"g_{name}": value.item() for name, value in terms.items()}
        raise KeyError(f"wav2pix has no optimiser {optimizer!r} (discriminator, generator)")

    def picture_rows(self, nets: dict[str, nn.Module], batch: dict, out: dict) -> list[torch.Tensor]:
        """Rows for the sample grid: real faces above the faces generated from their audio."""
        return [out["real"], out["fake"]]

    @torch.no_grad()
    def generate(self, nets: dict[str, nn.Module], audio: torch.Tensor) -> torch.Tensor:
        """Faces in [-1, 1] (N x 3 x S x S) from N prepared 1 s waveforms (``prepare_audio``)."""
        return nets["generator"](nets["speech_encoder"](audio))

    @staticmethod
    def prepare_audio(waveform, starts: list[int]) -> torch.Tensor:
        """1 s windows of a 16 kHz waveform at the given sample offsets, each prepared as in training."""
        return torch.stack([torch.from_numpy(prepared_audio(waveform[start:start + AUDIO_SAMPLES], None))
                            for start in starts])

    @torch.no_grad()
    def sample(self, nets: dict[str, nn.Module], inputs, output: str, device, every: float = 1.0,
               limit: int = 16) -> torch.Tensor:
        """``image``: a face for each 1 s window, windows ``every`` seconds apart (at most ``limit``).
        ``video``: a face for every frame at ``inputs.fps``, each from the second of speech centred on it."""
        waveform = inputs.audio
        if output == "image":
            hop = max(1, int(every * AUDIO_SAMPLES))
            starts = list(range(0, max(1, len(waveform) - AUDIO_SAMPLES + 1), hop))[:limit]
        else:
            half = AUDIO_SAMPLES // 2
            waveform = np.pad(waveform, (half, half))
            starts = [int(round(k / inputs.fps * AUDIO_SAMPLES)) for k in range(inputs.frames)]
        faces = [self.generate(nets, self.prepare_audio(waveform, starts[i:i + 64]).to(device)).float().cpu()
                 for i in range(0, len(starts), 64)]
        return torch.cat(faces)

    def evaluate(self, nets: dict[str, nn.Module], data, split: str, device, limit: int | None = None) -> Evaluation:
        """The paper's measures on ``split`` (definitions: ``avmodels.metrics``), each beside its value on the real
        crops (``*_real``) and on a trivial answer (``*_baseline``): dlib finding a face and its 68 landmarks (the
        paper's), the same with MediaPipe, speaker identification by a probe trained on the real training crops,
        dlib-descriptor identity (similarity to the real face of the same sample, and nearest-speaker accuracy
        against the real training faces), and L1. The baseline draws the mean training face for every sample; for
        identity it names every face as the split's commonest speaker. The split is streamed; only the faces
        (uint8) are kept, at most ``limit`` of them."""
        real, fake, speakers = self._faces(nets, data, split, device, limit)
        if not len(real):
            raise ValueError(f"{data}: the {split} split has no samples")
        train_real, train_speakers = training_faces(data, self.view, "image", limit=GALLERY, size=self.image_size)
        mean_face = np.repeat(train_real.mean(0).round().astype(np.uint8)[None], len(real), 0)
        tests = {"generated": (fake, speakers), "real": (real, speakers)}
        identified = speaker_identification(train_real, train_speakers, tests, self.speakers)
        pairs = same_speaker_pairs(speakers)
        commonest = float(np.bincount(speakers).max() / len(speakers))  # the best single answer
        metrics = {"split": split, "samples": len(real), "speakers_in_split": int(len(set(speakers.tolist())))}
        for name, measure in (("dlib_detectability", dlib_detectability), ("face_detectability", face_detectability)):
            metrics.update({name: measure(fake), f"{name}_baseline": measure(mean_face[:1]),
                            f"{name}_real": measure(real)})
        metrics.update({
            "speaker_id_accuracy": identified["generated"], "speaker_id_accuracy_baseline": commonest,
            "speaker_id_accuracy_real": identified["real"],
            "identity_similarity": identity_similarity(fake, real),
            "identity_similarity_baseline": identity_similarity(mean_face, real),
            "identity_similarity_real": identity_similarity(real[pairs[:, 0]], real[pairs[:, 1]]),
            "identity_accuracy": identity_accuracy(fake, speakers, train_real, train_speakers),
            "identity_accuracy_baseline": commonest,
            "identity_accuracy_real": identity_accuracy(real, speakers, train_real, train_speakers),
            "l1": _l1(fake, real), "l1_baseline": _l1(mean_face, real)})
        single_answer = "the best single answer: the share of the split's commonest speaker"
        metrics = described_baselines(metrics, {
            "": f"the mean of the real training faces (at most {GALLERY}), drawn for every sample",
            "speaker_id": single_answer, "identity_accuracy": single_answer})
        metrics["protocols"] = {
            "dlib_detectability": "the paper's: share of faces where dlib's HOG detector finds a face and 68 points",
            "face_detectability": "the same with MediaPipe's face mesh (ours)",
            "speaker_id_accuracy": "ours: a CNN probe trained on the real training crops names the speaker (the "
                                   "paper fine-tuned VGG-Face)",
            "identity_similarity": "ours: cosine of dlib descriptors, generated face against its sample's real face",
            "identity_accuracy": "ours: nearest speaker by dlib descriptor among the training split's real faces",
            "l1": f"mean absolute difference in [-1, 1] units at {self.image_size} px"}
        return Evaluation(metrics, [from_uint8(real[:8]), from_uint8(fake[:8])])

    def _faces(self, nets, data, split: str, device, limit: int | None) -> tuple:
        """(real faces, generated faces, speaker indices) of a split, streamed."""
        real, fake, speakers = [], [], []
        shards = ShardDir(data)
        total = shards.samples(split) if limit is None else min(limit, shards.samples(split))
        for batch in tracked(split_batches(shards.urls(split), None, self.view, device, batch_size=EVAL_BATCH),
                             -(-total // EVAL_BATCH), f"generating {split}'s faces"):
            real.append(to_uint8(self._resize(batch["image"])))
            fake.append(to_uint8(self.generate(nets, batch["audio"])))
            speakers.append(batch["speaker"].cpu().numpy())
            if limit is not None and sum(map(len, real)) >= limit:
                break
        count = limit or sum(map(len, real))
        join = lambda parts: np.concatenate(parts)[:count] if parts else np.zeros((0,), np.uint8)
        return join(real), join(fake), join(speakers)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        """Shards hold 128 px faces; the 64 px model reads them area-downsampled, as the official code did."""
        return area_resized(images, self.image_size)


def _l1(faces: np.ndarray, real: np.ndarray) -> float:
    """Mean absolute difference of uint8 faces in [-1, 1] units."""
    return float(np.abs(faces.astype(np.float32) - real.astype(np.float32)).mean() / 127.5)
