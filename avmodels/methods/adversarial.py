"""What the GAN methods share: BCE on logits and a discriminator's outputs on real and on fake inputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel


def bce(logit: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    """BCE of logits against a constant target, in float32 (bf16 autocast refuses plain BCE on probabilities)."""
    logit = logit.float()
    return F.binary_cross_entropy_with_logits(logit, torch.as_tensor(target, device=logit.device).expand_as(logit))


def real_and_fake(discriminator, real: tuple, fake: tuple) -> tuple[tuple, tuple]:
    """``discriminator(*real)`` and ``discriminator(*fake)``: two passes, as the official codes (batch-norm
    statistics of real and fake apart); under DDP one pass over both concatenated, since DDP takes one forward
    per backward."""
    if isinstance(getattr(discriminator, "_orig_mod", discriminator), DistributedDataParallel):  # compiled or not
        outputs = discriminator(*(torch.cat([r, f]) for r, f in zip(real, fake)))
        count = len(real[0])
        return tuple(o[:count] for o in outputs), tuple(o[count:] for o in outputs)
    return discriminator(*real), discriminator(*fake)
