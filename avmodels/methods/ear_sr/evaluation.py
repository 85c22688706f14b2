"""Ear-SR's evaluation: faces from the 8 x 8 inputs alone (``*_lr_only``: E_l), from the inputs and the speech (no
suffix) and bicubic up-sampling (``*_baseline``, the floor), against the real faces, by the paper's measures.

Identity is the paper's: the nearest speaker by dlib descriptors, on a closed-set split (speakers seen in
training) among centroids of those speakers' training faces, on an open-set split among its own real faces'
centroids; with the similarity to the sample's own face, PSNR and SSIM. The real faces' identity accuracy is the
ceiling. Where the extract's --meta CSV gave gender or age, probes trained on the training faces name them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from avmodels.evaluation import Evaluation, described_baselines, split_samples, training_faces
from avmodels.methods.ear_sr.view import ATTRIBUTES
from avmodels.metrics import identity_accuracy, identity_similarity, psnr, speaker_identification, ssim
from avmodels.pictures import to_uint8
from avprep.shard.folder import ShardDir

ATTRIBUTE_GALLERY = 2000  # training faces the gender and age probes learn from, at most
GALLERY_PER_SPEAKER = 16  # training faces per speaker that name a closed-set test's faces


def evaluate(method, nets: dict, data, split: str, device, limit: int | None = None) -> Evaluation:
    """The measures on ``split`` (module docstring) and the picture: real | 8 x 8 | bicubic | E_l | fused | the 8 x 8
    input with the voice of the next sample of another speaker (the paper's mixing figure) | that speaker's real
    face."""
    real, low, speakers, spectrograms = [], [], [], []
    attributes = {name: [] for name in ATTRIBUTES}
    for batch, i in split_samples(data, split, method.view, device, limit):
        real.append(batch["hr"][i])
        low.append(batch["lr"][i])
        spectrograms.append(batch["spectrogram"][i])
        speakers.append(int(batch["speaker"][i]))
        for name in ATTRIBUTES:
            attributes[name].append(batch[name][i])
    real, low, spectrograms, speakers = (torch.stack(real), torch.stack(low), torch.stack(spectrograms),
                                         np.array(speakers))
    made = {"lr_only": [], "": []}
    for start in range(0, len(real), 16):
        from_lr, fused = method.super_resolve(nets, low[start:start + 16], spectrograms[start:start + 16])
        made["lr_only"].append(from_lr)
        made[""].append(fused)
    made = {name: torch.cat(parts) for name, parts in made.items()}
    made["baseline"] = F.interpolate(low, size=real.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
    truth = to_uint8(real)
    closed = ShardDir(data).is_closed(split)
    if closed:  # speakers seen in training: named against their training faces
        gallery, gallery_speakers = training_faces(data, method.view, "hr", limit=ATTRIBUTE_GALLERY,
                                                   speakers=set(speakers.tolist()), per_speaker=GALLERY_PER_SPEAKER,
                                                   spectrogram=False)
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
            metrics.update(attribute_accuracy(name, np.array(values), truth, made, data, method.view))
    voices = other_speakers(speakers)
    with torch.no_grad():
        _, mixed = method.super_resolve(nets, low[:8], spectrograms[voices[:8]])
    rows = [real[:8], F.interpolate(low[:8], size=real.shape[-2:], mode="nearest"), made["baseline"][:8],
            made["lr_only"][:8], made[""][:8], mixed, real[voices[:8]]]
    metrics["protocols"] = {
        "identity_accuracy": "the paper's identity measure as nearest speaker centroid of dlib descriptors (closed "
                             "set: the speakers' training faces; open set: the split's real faces); the paper used "
                             "its own VoxCeleb2 classifier",
        "identity_similarity": "cosine of dlib descriptors against the sample's real face",
        "psnr": "true PSNR of the 128 px colour faces", "ssim": "ATVGnet's: colour, resized to 256 px",
        "*_lr_only": "E_l alone, no audio"}
    for name in [name for name in metrics if name.endswith("_baseline")]:  # E_l alone has the same floor
        metrics[name.replace("_baseline", "_lr_only_baseline")] = metrics[name]
    metrics = described_baselines(metrics, {"": "the floor: bicubic upsampling of the 8 x 8 input"})
    return Evaluation(metrics, [row.float() for row in rows])


def attribute_accuracy(name: str, values: np.ndarray, truth: np.ndarray, made: dict, data, view) -> dict:
    """``<name>_accuracy*``: a probe (``avmodels.metrics.speaker_identification``'s CNN) trained on the training
    halves' real faces to name the attribute (each value a class), scored on this split's real faces (the
    ceiling) and on each kind of made face, over the samples whose value the training faces have."""
    faces, labels = training_faces(data, view, "hr", limit=ATTRIBUTE_GALLERY, field=name, spectrogram=False)
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


def other_speakers(speakers: np.ndarray) -> np.ndarray:
    """For each sample, the next sample (cyclically) of another speaker; itself when the split has one speaker."""
    chosen = np.arange(len(speakers))
    for i, speaker in enumerate(speakers):
        others = [j for j in (np.arange(1, len(speakers)) + i) % len(speakers) if speakers[j] != speaker]
        chosen[i] = others[0] if others else i
    return chosen
