"""Weights on disk: checkpoints and stage files (plain state dicts of tensors, numbers and strings, written
atomically, loaded without pickle) and the weight files users give (VGG19, pretrained encoders).

A training checkpoint holds: ``method``, ``config`` (the recipe after overrides, JSON text), ``speakers``,
``dataset`` (the shards' facts: speakers, labels, attributes, fps, sample rate; JSON text),
``networks`` / ``optimizers`` / ``schedulers`` (state dicts by name), ``step``, ``stage``, ``stage_step``,
``epoch`` and ``batches_in_epoch`` (the data position) and ``rng`` (torch's CPU and CUDA generator states, one
entry per DDP rank). A stage's final weights (``stage-<name>.pt``) hold the first four and ``networks``.

A training checkpoint leaves out the networks that still hold what the last stage file beside it holds, or what
they were built with from the run's seed: ``kept`` names, for each network, that file (or ``initial``) and the
SHA-1 of its weights there. ``load`` fills them back in from the stage file; ``load_networks`` checks that a
freshly built network is the one ``initial`` means. Stage files are complete in themselves.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch


def save_atomic(state: dict, path: Path) -> None:
    """Write to a temporary name beside ``path``, flush to disk, then rename: readers never see half a file."""
    temporary = path.with_name(f".{path.name}.partial")
    with open(temporary, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


INITIAL = "initial"  # a kept network's weights as built from the run's seed


def load(path: Path) -> dict:
    """A checkpoint written by this trainer (``weights_only=True``: tensors and plain values, never code), with
    the networks it keeps in a stage file beside it read from there."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    stage_files = {}
    for name, (where, digest) in state.get("kept", {}).items():
        if name in state["networks"] or where == INITIAL:
            continue
        if where not in stage_files:
            if not (path.parent / where).is_file():
                raise FileNotFoundError(f"{path} keeps {name} in {where} beside it, which is missing: copy the "
                                        "stage file with the checkpoint, or use a stage-*.pt file (complete in itself)")
            stage_files[where] = torch.load(path.parent / where, map_location="cpu", weights_only=True,
                                            mmap=True)["networks"]  # mapped: only the networks taken are read
        if state_digest(stage_files[where][name]) != digest:
            raise ValueError(f"{path} keeps {name} in {where} beside it, which has changed since (a stage trained "
                             "again?): use a stage-*.pt file, complete in itself")
        state["networks"][name] = stage_files[where][name]
    return state


def state_digest(state: dict) -> str:
    """SHA-1 of named tensors' names, dtypes, shapes and bytes: equal exactly when the weights are."""
    digest = hashlib.sha1()
    for key, value in state.items():
        digest.update(f"{key} {value.dtype} {tuple(value.shape)}".encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


DATASET_FACTS = ("speakers", "labels", "attributes", "fps", "sample_rate")


def weights(method: str, document: dict, dataset: dict, nets: dict) -> dict:
    """What every checkpoint starts with: enough to rebuild the method and its networks, and the facts of the
    shards' dataset.json that sampling needs (speakers, labels, attributes, frame rates, sample rate)."""
    facts = {key: dataset[key] for key in DATASET_FACTS if key in dataset}
    return {"method": method, "config": json.dumps(document), "speakers": dataset["speakers"],
            "dataset": json.dumps(facts), "networks": {name: net.state_dict() for name, net in nets.items()}}


def dataset_of(checkpoint: dict) -> dict:
    """The dataset facts a checkpoint was trained with (checkpoints before they were kept: speakers only)."""
    return json.loads(checkpoint.get("dataset") or json.dumps({"speakers": checkpoint["speakers"]}))


def frame_rate(checkpoint: dict, default: float = 25.0) -> float:
    """The frame rate of the shards a checkpoint was trained on (the first, if they had several)."""
    return float((dataset_of(checkpoint).get("fps") or [default])[0])


def load_networks(nets: dict, checkpoint: dict) -> None:
    """Each network's weights from ``checkpoint``; one it keeps as ``initial`` must already be that (built from
    the run's seed)."""
    for name, net in nets.items():
        if name in checkpoint["networks"]:
            net.load_state_dict(checkpoint["networks"][name])
        elif state_digest(net.state_dict()) != checkpoint["kept"][name][1]:
            raise ValueError(f"the checkpoint keeps {name} as first built from the run's seed, and this build "
                             "differs (another torch version?): use a stage-*.pt file, complete in itself")


def recipe_of(checkpoint: dict) -> dict:
    return json.loads(checkpoint["config"])


def load_user_weights(path: str | Path, setting: str, strip_prefix: str = "") -> dict:
    """A state dict a user gives (``setting`` names where, e.g. ``train.init.decoder``, for the errors): loaded with
    ``weights_only=True`` (tensors and plain containers, never code), optionally under a ``state_dict`` key, with
    ``strip_prefix`` taken off its keys (``module.`` from DataParallel)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{setting}: no file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle's refusal of an object, or a file that is no torch save at all
        raise ValueError(f"{setting}: {path} is not a plain state dict of tensors (loaded with "
                         f"weights_only=True): {str(error).splitlines()[0]}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{setting}: {path} does not hold a state dict (name -> tensor)")
    return {key[len(strip_prefix):] if strip_prefix and key.startswith(strip_prefix) else key: value
            for key, value in state.items()}
