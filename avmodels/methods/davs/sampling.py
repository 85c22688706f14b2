"""DAVS's sampling: the official test-time training of copies of the networks on the reference, then a frame per
frame time, audio-driven (word embeddings of the speech's MFCC windows) or video-driven (of the driving video's
lips, cropped as the recipe crops faces)."""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avmodels.methods.davs.view import MOUTH
from avmodels.sampling import InputProblem
from avprep.shard.sample import audio_mfcc_windows, recipe_crop


def fine_tuned(method, nets: dict[str, nn.Module], reference: torch.Tensor, first_words: torch.Tensor | None,
               tuned: tuple[str, ...]) -> dict[str, nn.Module]:
    """Copies of ``nets`` with ``tuned`` fitted to the reference (official test-time training): each step a
    fresh Adam step on 4 x L1 between the reference and its reconstruction, the mouth weighted 0.001.
    ``first_words`` (N, 20, 12) MFCC windows drive the reconstruction (audio-driven, one per step);
    None: the reference's own lips do (video-driven). The given networks are never modified."""
    nets = {name: copy.deepcopy(net) if name in tuned else net for name, net in nets.items()}
    mask = torch.ones_like(reference)
    mask[..., MOUTH[0], MOUTH[1]] = 0.001
    with torch.enable_grad():
        for step in range(method.finetune_steps):
            for name in tuned:
                nets[name].train(name != "audio_encoder")  # the official keeps the MFCC encoder in eval mode
            if first_words is None:
                words = nets["visual_encoder"](reference)
            else:
                words = nets["audio_encoder"](first_words[min(step, len(first_words) - 1)][None])
            made = nets["decoder"](nets["person_encoder"](reference), words)
            optimizer = torch.optim.Adam([p for name in tuned for p in nets[name].parameters()],
                                         lr=method.finetune_lr, betas=(0.9, 0.999))
            (4 * F.l1_loss(made * mask, reference * mask)).backward()
            optimizer.step()
    for name in tuned:
        nets[name].eval()
    return nets


def sample(method, nets: dict[str, nn.Module], inputs, device) -> torch.Tensor:
    """The reference face saying ``inputs.audio`` (audio-driven), or mouthing the driving video's lips
    (video-driven, when ``inputs.driving`` is given): one frame per frame time at ``inputs.fps``."""
    reference = torch.from_numpy(inputs.reference.image).permute(2, 0, 1)[None].float().to(device) / 255
    if inputs.driving is not None:
        lips = np.stack([recipe_crop(inputs.driving, i, inputs.recipe) for i in inputs.driving_frames()])
        tuned = fine_tuned(method, nets, reference, None, ("person_encoder", "decoder"))
        lips = torch.from_numpy(lips).permute(0, 3, 1, 2).float().to(device) / 255
        return method.talk(tuned, reference, method.video_embeddings(tuned, lips)) * 2 - 1
    if inputs.audio is None:
        raise InputProblem("davs samples from --reference with --audio (audio-driven) or --driving "
                           "(video-driven)")
    mfcc = audio_mfcc_windows(inputs.audio, inputs.recipe, inputs.fps, inputs.frames)
    mfcc = torch.from_numpy(mfcc).float().to(device)
    tuned = fine_tuned(method, nets, reference, mfcc[:5], ("person_encoder", "decoder", "audio_encoder"))
    return method.talk(tuned, reference, method.audio_embeddings(tuned, mfcc)) * 2 - 1
