"""DAVS (Zhou et al., AAAI 2019, "Talking Face Generation by Adversarially Disentangled Audio-Visual
Representation"; Hangz-nju-cuhk/Talking-Face-Generation-DAVS): a face from a person-id embedding (of a
reference frame) and a word-id embedding (of the audio or of the lips), trained so that the audio and visual
word-id spaces agree and the person-id space carries no word. Networks: ``networks.py``. Stages, by name:

    pid_pretrain   optional: the person-id encoder as a speaker classifier (the paper's encoder was pretrained on
                   MS-Celeb-1M; ``train.init.person_encoder`` loads such weights instead). Skip it with
                   ``--stage word_pretrain``, e.g. on LRW, which publishes no speaker ids.
    word_pretrain  the audio and visual word-id encoders and the word classifier on the word labels (the
                   pretraining the authors never released): word CE on both embeddings, the L2 contrastive loss
                   between them (each against the other held fixed) and the modality-adversarial loss against
                   the embedding discriminator, which learns to tell audio from visual embeddings.
    disentangle    the full objective of the official ``Gen_final_v1.py``. Discriminators: embedding
                   discriminator (audio 1, visual 0), identity discriminator (word CE from the person-id features
                   of 20 consecutive frames) and sequence discriminator (soft-label BCE on 6 stacked real and
                   generated frames, and on its sync head with their MFCC). Generator (both encoders, decoder,
                   classifier): BCE of both sequence heads on the generated frames, 4 x L1 frame + 8 x L1 mouth
                   on the 0-255 scale for the audio- and the video-driven frames, 5 x L1 of consecutive audio-
                   driven frames outside the mouth (the first against the reference), the contrastive loss (lips
                   held fixed), 1e6 x MSE of the identity discriminator's softmax against uniform (in float32),
                   word CE on both embeddings and 5 x the modality-adversarial loss.

Each step draws, as the official loader: 12 frames every other frame from frame 0 or 1 (the classifier's
input), 6 consecutive ones of them to generate, 20 consecutive frames for the identity discriminator and a
reference frame anywhere in the clip (``avmodels.views.davs``). Pixels are in [0, 1], as the official code.

The official ``GANLoss`` draws its soft label once and caches it for the whole run; here a fresh one is drawn per
step (U(0, 0.1) off the hard label), as the paper describes. Sampling fine-tunes copies of the networks on the
reference for 5 Adam steps (a fresh optimiser each step, as the official test code), then scales audio word
embeddings by 1.5 and visual ones by 0.8, as the official test models; the checkpoint is never touched.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avmodels.evaluation import Evaluation, Measures, split_samples
from avmodels.losses import bce, real_and_fake
from avmodels.methods.base import Method
from avmodels.methods.davs import sampling
from avmodels.methods.davs.networks import (
    AudioWordEncoder,
    Decoder,
    EmbeddingDiscriminator,
    IdentityDiscriminator,
    PersonIdEncoder,
    SequenceDiscriminator,
    VisualWordEncoder,
    WordClassifier,
    scaled,
)
from avmodels.methods.davs.view import CLASSIFIED, GENERATED, IDENTITY, MOUTH
from avmodels.methods.davs.view import view as shard_view
from avmodels.metrics import identity_similarity, landmarks68, lmd, psnr, ssim
from avmodels.pictures import to_uint8

SYNC_MAX_LAG = 5
LRW_WORDS = 500


class DAVS(Method):
    name = "davs"
    stages = ("pid_pretrain", "word_pretrain", "disentangle")
    loss_terms = {"pid_pretrain": (), "word_pretrain": ("words", "contrastive", "modality"),
                  "disentangle": ("adversarial", "sync", "frame", "mouth", "smooth", "contrastive", "identity_uniform",
                                  "words", "modality", "identity_words")}
    view = staticmethod(shard_view)
    inputs = ("reference",)
    drivers = ("audio", "driving")  # one of them: audio-driven, or video-driven (lips from the driving video)
    outputs = ("video",)
    main_measures = {"word_accuracy_audio": "higher", "word_accuracy_visual": "higher", "lmd": "lower"}

    def __init__(self, model: dict, dataset: dict):
        words = len(dataset.get("labels") or [])
        if not words:
            raise ValueError("DAVS trains on word labels and these shards have none: shard an LRW tree (docs/"
                             "datasets.md), or give `avprep extract` a --meta CSV with a 'label' column")
        width = float(model.get("width", 1.0))
        self.words = words
        self.margin = float(model.get("contrastive_margin", 1.0))
        self.soft_label = float(model.get("soft_label", 0.1))
        self.finetune_steps = int(model.get("finetune_steps", 5))
        self.finetune_lr = float(model.get("finetune_lr", 2e-4))
        self.audio_scale = float(model.get("audio_scale", 1.5))
        self.video_scale = float(model.get("video_scale", 0.8))
        self.networks = {
            "person_encoder": PersonIdEncoder(width),
            "visual_encoder": VisualWordEncoder(width),
            "audio_encoder": AudioWordEncoder(),
            "decoder": Decoder(width),
            "word_classifier": WordClassifier(CLASSIFIED, words),
            "person_classifier": nn.Linear(scaled(256, width), max(1, len(dataset["speakers"]))),
            "embedding_discriminator": EmbeddingDiscriminator(),
            "identity_discriminator": IdentityDiscriminator(IDENTITY, words, width),
            "sequence_discriminator": SequenceDiscriminator(GENERATED, width),
        }

    def forward(self, nets: dict[str, nn.Module], batch: dict, ctx=None) -> dict:
        stage = ctx.stage if ctx is not None else "disentangle"
        frames = (batch["frames"] + 1) / 2
        rows = torch.arange(len(frames), device=frames.device)[:, None]
        reference = frames[rows[:, 0], batch["reference_index"]]
        if stage == "pid_pretrain":
            return {"reference": reference,
                    "speaker_logits": nets["person_classifier"](nets["person_encoder"](reference)[0])}
        out = self.word_embeddings(nets, frames, batch)
        classified, mfcc = out["classified"], out["mfcc"]
        if stage == "word_pretrain":
            return out
        window = batch["generated"][:, None] + torch.arange(GENERATED, device=frames.device)
        identity_frames = frames[rows, batch["identity_start"][:, None] + torch.arange(IDENTITY,
                                                                                       device=frames.device)]
        # One pass of the person-id encoder over the references and the identity frames (DDP takes one forward
        # per backward): the references' features drive the decoder, the others feed the identity discriminator.
        person = nets["person_encoder"](torch.cat([reference, identity_frames.flatten(0, 1)]))
        references = [feature[:len(frames)] for feature in person]
        words = torch.cat([out["audio"][rows, window].flatten(0, 1), out["visual"][rows, window].flatten(0, 1)])
        both = [feature.repeat_interleave(GENERATED, 0).repeat(2, *[1] * (feature.dim() - 1))
                for feature in references]
        fakes = nets["decoder"](both, words).unflatten(0, (2, len(frames), GENERATED))
        return {**out, "reference": reference, "targets": classified[rows, window], "sync_mfcc": mfcc[rows, window],
                "from_audio": fakes[0], "from_video": fakes[1], "person_sequence": person[4][len(frames):]}

    @staticmethod
    def word_embeddings(nets: dict[str, nn.Module], frames: torch.Tensor, batch: dict) -> dict:
        """The 12 classified frames of each clip (``frames`` in [0, 1]), their MFCC windows and both word-id
        embeddings, (B, 12, 256) each."""
        rows = torch.arange(len(frames), device=frames.device)[:, None]
        classified, mfcc = frames[rows, batch["classified"]], batch["mfcc"][rows, batch["classified"]]
        return {"classified": classified, "mfcc": mfcc, "audio": _per_frame(nets["audio_encoder"], mfcc),
                "visual": _per_frame(nets["visual_encoder"], classified)}

    def loss(self, optimizer: str, nets: dict[str, nn.Module], batch: dict, out: dict, weights: dict[str, float],
             ctx=None) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["label"]
        if optimizer == "person_id":
            error = F.cross_entropy(out["speaker_logits"].float(), batch["speaker"])
            return error, {"pid_ce": error.item(), "pid_accuracy": _accuracy(out["speaker_logits"], batch["speaker"])}
        if optimizer == "modality_discriminator":
            error = self._modality_discriminator(nets, out)
            return error, {"d_modality": error.item()}
        if optimizer == "word_encoders":
            audio_logits, visual_logits = _both(nets["word_classifier"], out["audio"], out["visual"])
            terms = {"words_audio": F.cross_entropy(audio_logits.float(), labels),
                     "words_visual": F.cross_entropy(visual_logits.float(), labels),
                     "contrastive": (_contrastive(out["visual"].detach(), out["audio"], self.margin)
                                     + _contrastive(out["audio"].detach(), out["visual"], self.margin)),
                     "modality": self._modality_fooled(nets, out)}
            total = (weights["words"] * (terms["words_audio"] + terms["words_visual"])
                     + weights["contrastive"] * terms["contrastive"] + weights["modality"] * terms["modality"])
            return total, {**{n: v.item() for n, v in terms.items()}, "accuracy_audio": _accuracy(audio_logits, labels),
                           "accuracy_visual": _accuracy(visual_logits, labels)}
        if optimizer == "discriminators":
            soft = self.soft_label * torch.rand(4, device=labels.device)
            fakes = _stacked(torch.cat([out["from_audio"], out["from_video"]]).detach())
            (real_patch, real_sync), (fake_patch, fake_sync) = real_and_fake(
                nets["sequence_discriminator"], (_stacked(out["targets"]), out["sync_mfcc"]),
                (fakes, out["sync_mfcc"].repeat(2, 1, 1, 1)))
            terms = {"d_sequence": 0.5 * (bce(fake_patch, soft[0]) + bce(real_patch, 1 - soft[1])),
                     "d_sync": 0.5 * (bce(fake_sync, soft[2]) + bce(real_sync, 1 - soft[3])),
                     "d_modality": self._modality_discriminator(nets, out),
                     "d_identity_words": F.cross_entropy(
                         nets["identity_discriminator"](out["person_sequence"].detach()).float(), labels)}
            total = (terms["d_sequence"] + terms["d_sync"] + terms["d_modality"]
                     + weights["identity_words"] * terms["d_identity_words"])
            return total, {n: v.item() for n, v in terms.items()}
        if optimizer == "generator":
            patch, sync = nets["sequence_discriminator"](
                _stacked(torch.cat([out["from_audio"], out["from_video"]])), out["sync_mfcc"].repeat(2, 1, 1, 1))
            audio_logits, visual_logits = _both(nets["word_classifier"], out["audio"], out["visual"])
            terms = {"adversarial": bce(patch, 1.0), "sync": bce(sync, 1.0),
                     "frame": _l1_255(out["from_audio"], out["targets"]) + _l1_255(out["from_video"], out["targets"]),
                     "mouth": (_l1_255(out["from_audio"], out["targets"], mouth_only=True)
                               + _l1_255(out["from_video"], out["targets"], mouth_only=True)),
                     "smooth": _smoothness(out["from_audio"], out["reference"]),
                     "contrastive": _contrastive(out["visual"].detach(), out["audio"], self.margin),
                     "identity_uniform": self._identity_uniform(nets, out["person_sequence"]),
                     "words": F.cross_entropy(audio_logits.float(), labels) + F.cross_entropy(visual_logits.float(),
                                                                                               labels),
                     "modality": self._modality_fooled(nets, out)}
            total = sum(weights[name] * value for name, value in terms.items())
            return total, {**{f"g_{n}": v.item() for n, v in terms.items()},
                           "accuracy_audio": _accuracy(audio_logits, labels),
                           "accuracy_visual": _accuracy(visual_logits, labels)}
        raise KeyError(f"davs has no optimiser {optimizer!r} (person_id, modality_discriminator, word_encoders, "
                       "discriminators, generator)")

    def _modality_discriminator(self, nets, out: dict) -> torch.Tensor:
        """The embedding discriminator learns audio embeddings as 1, visual ones as 0 (official ``dis_R_loss``)."""
        audio, visual = _both(nets["embedding_discriminator"], out["audio"].detach(), out["visual"].detach())
        return 0.5 * (bce(audio, 1.0) + bce(visual, 0.0))

    def _modality_fooled(self, nets, out: dict) -> torch.Tensor:
        """The encoders make audio embeddings pass as visual and visual ones as audio."""
        audio, visual = _both(nets["embedding_discriminator"], out["audio"], out["visual"])
        return bce(audio, 0.0) + bce(visual, 1.0)

    def _identity_uniform(self, nets, person_sequence: torch.Tensor) -> torch.Tensor:
        """MSE between the identity discriminator's word softmax and uniform, in float32: weighted 1e6, bf16's
        rounding of the logits alone would outweigh the term. The official weight is set for LRW's 500 words;
        a softmax over K words strays from uniform by about 1/K, so the MSE is scaled by (K / 500)^2 (1 at 500
        words) to keep its weight among the other terms on smaller vocabularies."""
        with torch.autocast(person_sequence.device.type, enabled=False):
            probabilities = F.softmax(nets["identity_discriminator"](person_sequence.float()), dim=1)
            error = F.mse_loss(probabilities, torch.full_like(probabilities, 1 / self.words))
        return error * (self.words / LRW_WORDS) ** 2

    def picture_rows(self, nets: dict[str, nn.Module], batch: dict, out: dict) -> list[torch.Tensor]:
        """disentangle: the first clip's 6 real frames above the audio- and the video-driven ones; word_pretrain:
        its 12 classified frames; pid_pretrain: the batch's references."""
        if "from_audio" in out:
            rows = [out["targets"][0], out["from_audio"][0].detach(), out["from_video"][0].detach()]
        else:
            rows = [out["classified"][0]] if "classified" in out else [out["reference"][:8]]
        return [row.float() * 2 - 1 for row in rows]

    @torch.no_grad()
    def talk(self, nets: dict[str, nn.Module], reference: torch.Tensor, words: torch.Tensor, chunk: int = 16):
        """(1, 3, S, S) reference in [0, 1] and (T, 256) word embeddings -> (T, 3, S, S) frames in [0, 1]."""
        person = nets["person_encoder"](reference)
        frames = []
        for start in range(0, len(words), chunk):
            part = words[start:start + chunk]
            frames.append(nets["decoder"]([feature.expand(len(part), *feature.shape[1:]) for feature in person], part))
        return torch.cat(frames).float()

    def audio_embeddings(self, nets: dict[str, nn.Module], mfcc: torch.Tensor) -> torch.Tensor:
        """(T, 20, 12) MFCC windows -> (T, 256), scaled as the official audio test model."""
        with torch.no_grad():
            return nets["audio_encoder"](mfcc) * self.audio_scale

    def video_embeddings(self, nets: dict[str, nn.Module], frames: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """(T, 3, S, S) lip frames in [0, 1] -> (T, 256), scaled as the official video test model."""
        with torch.no_grad():
            return torch.cat([nets["visual_encoder"](frames[i:i + chunk]) for i in range(0, len(frames), chunk)]
                             ) * self.video_scale

    def fine_tuned(self, nets: dict[str, nn.Module], reference: torch.Tensor, first_words: torch.Tensor | None,
                   tuned: tuple[str, ...]) -> dict[str, nn.Module]:
        """Copies of ``nets`` with ``tuned`` fitted to the reference (official test-time training): ``sampling.py``."""
        return sampling.fine_tuned(self, nets, reference, first_words, tuned)

    def sample(self, nets: dict[str, nn.Module], inputs, output: str, device, **options) -> torch.Tensor:
        """The reference face saying ``inputs.audio``, or mouthing the driving video's lips: ``sampling.py``."""
        return sampling.sample(self, nets, inputs, device)

    def evaluate(self, nets: dict[str, nn.Module], data, split: str, device, limit: int | None = None) -> Evaluation:
        """On ``split``: word accuracy from the audio embedding, the visual embedding and both (the paper's
        measure: the classifier on 12 frames, every other one); audio-video retrieval with those embeddings (the
        official ``evaluation.py``); and whole clips made from the first frame, audio- and video-driven (no
        test-time fine-tuning), against the real frames after it (frame 0 is the reference itself): SSIM, PSNR,
        LMD (dlib's mouth points), identity similarity (dlib descriptors, against the reference frame; real frames
        beside) and the sync of lips and audio (real clips beside). Floors (``*_baseline``): the reference held
        still for SSIM, PSNR and LMD; chance for word accuracy and retrieval."""
        measures, rows, videos, embedded = Measures(), [], [], {"audio": [], "visual": []}
        for batch, i in split_samples(data, split, self.view, device, limit):
            if i == 0:
                frames = (batch["frames"] + 1) / 2
                with torch.no_grad():
                    out = self.word_embeddings(nets, frames, batch)
                    logits = {m: nets["word_classifier"](out[m]).float() for m in ("audio", "visual")}
            for name in embedded:
                embedded[name].append(F.normalize(out[name][i].flatten().float(), dim=0).cpu())
            for name, value in (("audio", logits["audio"][i]), ("visual", logits["visual"][i]),
                                ("both", logits["audio"][i] + logits["visual"][i])):
                measures.add(f"word_accuracy_{name}", value.argmax() == batch["label"][i])
            real = to_uint8(frames[i] * 2 - 1)
            from_audio = self.talk(nets, frames[i, :1], self.audio_embeddings(nets, batch["mfcc"][i]))
            from_video = self.talk(nets, frames[i, :1], self.video_embeddings(nets, frames[i]))
            real_points, first = landmarks68(real[1:]), np.repeat(real[:1], len(real) - 1, 0)
            measures.add("identity_similarity_real", identity_similarity(real[1:], first))
            baseline = {"ssim": ssim(real[1:], first), "psnr": psnr(real[1:], first),  # the reference held still
                        "lmd": lmd(real_points, np.repeat(landmarks68(real[:1]), len(first), 0))}
            for suffix, made in (("", from_audio), ("_from_video", from_video)):
                fake = to_uint8(made[1:] * 2 - 1)
                measures.add_beside_floor({"ssim": ssim(real[1:], fake), "psnr": psnr(real[1:], fake),
                                           "lmd": lmd(real_points, landmarks68(fake))}, baseline, suffix)
                measures.add("identity_similarity" + suffix, identity_similarity(fake, first))
            if "audio" in batch:
                audio, fps = batch["audio"][i].cpu().numpy(), float(batch["fps"][i])
                measures.add_sync(to_uint8(from_audio * 2 - 1), real, audio, fps, SYNC_MAX_LAG)
                if len(videos) < 3:
                    videos.append((batch["key"][i], real, to_uint8(from_audio * 2 - 1), audio))
            if not rows:
                rows = [frames[i, :8] * 2 - 1, from_audio[:8] * 2 - 1, from_video[:8] * 2 - 1]
            measures.samples += 1
        protocols = {"word_accuracy_*": "the paper's: the word classifier on 12 frames (every other), audio, visual, "
                                        "and both (logits summed, as the official test)",
                     "video_from_audio_* / audio_from_video_*": "the official evaluation.py L2retrieval on unit "
                                                                "12 x 256 word embeddings; R@k in percent",
                     "ssim": "ATVGnet's: colour, resized to 256 px; frames 1-24 (frame 0 is the reference)",
                     "psnr": "true PSNR of the colour frames 1-24", "lmd": "ATVGnet's release: 20 mouth distances "
                                                                           "summed, dlib points at 256 px"}
        extra = {f"word_accuracy_{name}_baseline": 1 / self.words for name in ("audio", "visual", "both")}
        if embedded["audio"]:
            audio, visual = torch.stack(embedded["audio"]), torch.stack(embedded["visual"])
            for name, queries, targets in (("video_from_audio", audio, visual), ("audio_from_video", visual, audio)):
                extra.update(retrieval(name, queries, targets))
                extra.update(retrieval_chance(name, len(audio)))
        baselines = {"": "the floor: the reference held still, scored the same way",
                     "word_accuracy": "chance: 1 / the words the classifier names",
                     "video_from_audio": "chance: a random ranking of the split's clips",
                     "audio_from_video": "chance: a random ranking of the split's clips"}
        return Evaluation(measures.metrics(split, baselines, **extra, protocols=protocols), rows, videos)


def retrieval(name: str, queries: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """The official ``L2retrieval``: each query's rank of its own target among all targets by L2 distance
    (unit-length embeddings); R@1, 5 and 10 in percent and the median rank (1 = first)."""
    order = torch.cdist(queries.double(), targets.double()).argsort(dim=1)
    ranks = (order == torch.arange(len(queries))[:, None]).float().argmax(dim=1)
    scores = {f"{name}_r{k}": 100.0 * float((ranks < k).float().mean()) for k in (1, 5, 10)}
    return {**scores, f"{name}_median_rank": float(np.floor(np.median(ranks.numpy())) + 1)}


def retrieval_chance(name: str, count: int) -> dict[str, float]:
    """Retrieval's floor among ``count`` clips as ``name``'s baselines: R@k = k / count, median rank
    (count + 1) / 2."""
    return {**{f"{name}_r{k}_baseline": 100.0 * min(k, count) / count for k in (1, 5, 10)},
            f"{name}_median_rank_baseline": (count + 1) / 2}


def _both(network: nn.Module, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``network`` on the audio and the visual embeddings in one pass (DDP takes one forward per backward)."""
    out = network(torch.cat([audio, visual]))
    return out[:len(out) // 2], out[len(out) // 2:]


def _per_frame(encoder: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """An encoder over (B, T, ...) frames -> (B, T, 256)."""
    return encoder(inputs.flatten(0, 1)).unflatten(0, inputs.shape[:2])


def _stacked(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) -> (B, 3T, H, W): the sequence discriminator's input."""
    return frames.flatten(1, 2)


def _l1_255(fake: torch.Tensor, real: torch.Tensor, mouth_only: bool = False) -> torch.Tensor:
    """The official L1 on the 0-255 scale; ``mouth_only``: of the frames times the mouth mask (a mean over the
    whole frame, as the official, so the mask's share of the frame scales it)."""
    difference = (fake.float() - real).abs() * 255
    if mouth_only:
        mask = torch.zeros_like(difference[:1])
        mask[..., MOUTH[0], MOUTH[1]] = 1
        difference = difference * mask
    return difference.mean()


def _smoothness(from_audio: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Sum over the generated frames of the L1 outside the mouth between each frame and the one before it (the
    reference before the first; earlier frames held fixed), as the official ``G_x_loss``."""
    before = torch.cat([reference[:, None], from_audio[:, :-1].detach()], dim=1)
    outside = torch.ones_like(from_audio[:1, :1])
    outside[..., MOUTH[0], MOUTH[1]] = 0
    return ((from_audio.float() - before).abs() * outside).mean(dim=(0, 2, 3, 4)).sum()


def _contrastive(fixed: torch.Tensor, trained: torch.Tensor, margin: float) -> torch.Tensor:
    """The official L2 contrastive loss between unit-length (B, 12 x 256) embeddings: matching pairs pulled
    together (squared distance), other pairs pushed to at least ``margin`` apart, over 2B."""
    a, b = F.normalize(fixed.flatten(1).float(), dim=1), F.normalize(trained.flatten(1).float(), dim=1)
    distances = ((a[:, None] - b[None]).pow(2).sum(-1) + 1e-12).sqrt()
    apart = (margin - distances).clamp(min=0).pow(2)
    apart = apart - torch.diag(torch.diag(apart))
    return (apart.sum() + torch.diag(distances).pow(2).sum()) / (2 * len(a))


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())
