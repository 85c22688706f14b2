"""The methods the trainer knows, by name. One file per method holds its networks, losses and pictures.

A method is a class built as ``Method(model: dict, dataset: dict)`` (the recipe's ``[model]`` table and the facts
of the shards' dataset.json: ``speakers`` and ``labels`` lists, which size classifier heads) with:

    name, view               its registry name and its ``avmodels.views.VIEWS`` entry
    networks                 dict name -> nn.Module; the recipe's optimisers name these
    forward(nets, batch, ctx) the step's shared forward pass -> dict (e.g. generated images); ``ctx`` is the
                             trainer's StepContext (stage name, stage step, step, epoch, rank, world size)
    loss(optimizer, nets, batch, out, weights, ctx) -> (loss tensor, dict of floats to log)
                             the loss that optimiser minimises; ``weights`` is the stage's ``losses`` table
    picture_rows(nets, batch, out) -> list of N x 3 x H x W tensors in [-1, 1], one grid row each
    fit(nets, data, device, split)  optional: statistics computed before training (kept in networks' buffers)
    load_auxiliary(device) -> notes  optional: frozen helper networks from user files (VGG19), never checkpointed
    micro_batches(batch, ctx) -> list  optional: several optimiser rounds per loaded batch (HeadGAN's windows)
    after_step(nets, batch, ctx)   optional: called after each optimiser round (Ear-SR's moving-average generator)
    inputs, outputs, sample(nets, inputs, output, device, **options), evaluate(nets, data, split, device, limit)
                             what ``avmodels sample`` and ``avmodels eval`` call (avmodels.sampling)
    drivers                  optional: inputs of which the user gives one (DAVS: audio or driving)

``nets`` is ``networks`` as training sees them (wrapped for DDP or compiled), so the same code serves both. To
add a method: write ``avmodels/methods/<name>.py``, list its class here, and give it ``pipelines/<name>.toml``.
"""
from __future__ import annotations

from avmodels.methods.atvgnet import ATVGnet
from avmodels.methods.davs import DAVS
from avmodels.methods.ear_sr import EarSR
from avmodels.methods.headgan import HeadGAN
from avmodels.methods.wav2pix import Wav2Pix

METHODS = {"atvgnet": ATVGnet, "davs": DAVS, "ear_sr": EarSR, "headgan": HeadGAN, "wav2pix": Wav2Pix}


def get_method(name: str) -> type:
    if name not in METHODS:
        raise KeyError(f"no method named {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]
