"""What several test modules use: our commands run as a user runs them, synthetic shards of every method's format,
small settings per method, a VGG19-shaped state dict and free ports for DDP. (No test module imports another.)"""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile
import torch
import torch.nn.functional as F
from torch import nn

from avmodels import views
from avmodels.losses import VGG19Features, bce, real_and_fake
from avmodels.methods.base import Method
from avprep.media.ffmpeg import ffmpeg_exe
from avprep.shard.recipe import load_recipe


def run_cli(*args: str, check: bool = True, wrapper: tuple[str, ...] = (), **kwargs) -> subprocess.CompletedProcess:
    """Run ``avprep`` as a user would, in a subprocess (behind ``wrapper``, a command prefix, when given)."""
    result = subprocess.run([*wrapper, sys.executable, "-m", "avprep.cli", *args], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"}, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"avprep {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def run_avmodels(*args: str, wrapper: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``avmodels`` in a subprocess; ``wrapper`` such as torchrun's module runs it instead of plain python."""
    command = [*wrapper, "-m", "avmodels.cli", *args] if wrapper else [sys.executable, "-m", "avmodels.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})


def avmodels_here(*args: str):
    """``avmodels`` run in this process (no interpreter and torch start-up: for quick commands and their errors);
    the result has ``exit_code`` and ``output``."""
    from typer.testing import CliRunner

    from avmodels.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def assert_beside_baselines(scores: dict, method: str) -> None:
    """The eval JSON ``scores`` puts each of the method's main measures beside its baseline, and describes every
    ``*_baseline`` it reports (and nothing else) in ``"baselines"``."""
    from avmodels.methods import get_method

    for name in get_method(method).main_measures:
        assert isinstance(scores[name], float) and isinstance(scores[f"{name}_baseline"], float), name
    reported = {name for name in scores if name.endswith("_baseline")}
    assert set(scores["baselines"]) == reported and all(scores["baselines"].values())


def run_ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True)


def free_port() -> int:
    """A TCP port nobody listens on now: DDP tests' rendezvous (fixed ports collide between concurrent runs)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(port: int) -> tuple[str, ...]:
    """The command prefix of a 2-rank CPU (gloo) job on ``port``."""
    return sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)


def torchvision_shaped_vgg19() -> dict:
    """A state dict with torchvision's vgg19 keys and shapes (random values: the loader, not the weights, is
    under test), classifier included."""
    torch.manual_seed(0)
    state = {f"features.{key}": value for key, value in VGG19Features().features.state_dict().items()}
    state.update({"features.34.weight": torch.randn(512, 512, 3, 3), "features.34.bias": torch.randn(512),
                  "classifier.0.weight": torch.randn(8, 8), "classifier.0.bias": torch.randn(8)})
    return state


# Small settings: every stage of each method in a few steps, at small widths, on the CPU.
QUICK = ["train.num_workers=0", "train.log_every=1", "train.sample_every=1", "train.checkpoint_every=1000"]
TINY = {
    "wav2pix": ["model.image_size=64", "train.batch_size=2", "train.stages.gan.steps=3"],
    "atvgnet": ["model.image_size=64", "model.width=8", "train.stages.at_net.batch_size=2",
                "train.stages.vg_net.batch_size=2", "train.stages.at_net.steps=2", "train.stages.vg_net.steps=2"],
    "davs": ["model.width=0.125", "model.finetune_steps=2", "train.batch_size=2", "train.stages.pid_pretrain.steps=1",
             "train.stages.word_pretrain.steps=1", "train.stages.disentangle.steps=2"],
    "headgan": ["model.width=0.125", 'model.vgg19=""', "train.batch_size=2", "train.stages.gan.steps=2"],
    "ear_sr": ["model.width=0.125", 'model.vgg19=""', "train.batch_size=2", "train.stages.stylegan.steps=2",
               "train.stages.invert.steps=1", "train.stages.invert_joint.steps=2", "train.stages.encoders_lr.steps=1",
               "train.stages.encoders_audio.steps=1", "train.stages.fuse.steps=1"],
}


def tiny_config(method: str):
    """The method's recipe with ``QUICK`` and its ``TINY`` settings."""
    from avmodels.training.config import load_train_config

    return load_train_config(method, overrides=[*QUICK, *TINY[method]])


STOPS = {"wav2pix": 2, "atvgnet": 3, "davs": 3, "headgan": 1, "ear_sr": 4}  # a step of TINY's runs inside a
# later stage (HeadGAN: one stage; Ear-SR: inside invert_joint, whose regulariser holds a snapshot)


# Synthetic shards: the members `avprep shard` writes for each recipe, with smooth random pictures (small JPEGs).
FRAMES = {"atvgnet": 24, "davs": 25, "headgan": 6}  # ATVGnet: an example in [3, 7] and 16 after; DAVS: 24 + 1
SPEAKERS = ["spk_a", "spk_b", "spk_c"]
WORDS = ("ABOUT", "AFTER")  # the words of the LRW-shaped test tree and of synthetic shards


def smooth_picture(rng: np.random.Generator, size: int) -> np.ndarray:
    return cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)


def jpg(rng, size: int) -> bytes:
    return cv2.imencode(".jpg", smooth_picture(rng, size))[1].tobytes()


def png(rng, size: int) -> bytes:
    return cv2.imencode(".png", smooth_picture(rng, size))[1].tobytes()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


def flac(rng, seconds: float) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, rng.uniform(-0.5, 0.5, int(seconds * 16000)), 16000, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def clip(rng, prefix: str, extension: str, size: int, frames: int) -> dict:
    encode = jpg if extension == "jpg" else png
    return {f"{prefix}{i:03d}.{extension}": encode(rng, size) for i in range(frames)}


MEMBERS = {  # method -> rng -> the members after meta.json
    "wav2pix": lambda rng: {"image.jpg": jpg(rng, 128), "audio.flac": flac(rng, 1.5), "wrong.jpg": jpg(rng, 128)},
    "atvgnet": lambda rng: {**clip(rng, "f", "jpg", 128, 24), "mfcc.npy": npy(rng.normal(size=(24, 28, 12))),
                            "landmarks.npy": npy(rng.normal([64, 70], 12, (24, 68, 2)))},
    "davs": lambda rng: {**clip(rng, "f", "jpg", 256, 25), "mfcc.npy": npy(rng.normal(size=(25, 20, 12))),
                         "audio.flac": flac(rng, 1.0)},
    "headgan": lambda rng: {**clip(rng, "f", "jpg", 256, 6), **clip(rng, "nmfc", "png", 256, 6),
                            "ref.jpg": jpg(rng, 256), "ref_nmfc.png": png(rng, 256),
                            "mouth.npy": npy(rng.uniform(100, 156, (6, 2))),
                            "audio_features.npy": npy(rng.normal(size=(6, 300)))},
    "ear_sr": lambda rng: {"image.jpg": jpg(rng, 128), "lr.png": png(rng, 8), "audio.flac": flac(rng, 4.0)},
}


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for field, data in members.items():
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def write_shards(folder: Path, method: str, splits: dict[str, list[int]] | None = None, seed: int = 0,
                 members=None, frames: int | None = None) -> Path:
    """A shard folder as `avprep shard` writes one for ``method``'s recipe: dataset.json, index.parquet and
    ``<split>-NNNNNN.tar``, ``splits`` giving each split's samples per tar (default: one tar for each split of the
    recipe, 5 samples in ``train``'s, 3 in the others': fewer shards than a 2-rank job has ranks). Speakers and
    words go round the samples."""
    rng, members = np.random.default_rng(seed), members or MEMBERS[method]
    frames = frames or FRAMES.get(method, 1)
    recipe = load_recipe(method) if splits is None else None
    splits = splits or {name: [5] if name == "train" else [3] for name, _ in recipe.fractions}
    folder.mkdir(parents=True)
    listed, index = {}, []
    for split, counts in splits.items():
        names = [f"{split}-{number:06d}.tar" for number in range(len(counts))]
        for name, count in zip(names, counts):
            samples = []
            for _ in range(count):
                key, speaker = f"{split}_{len(index):04d}", len(index) % len(SPEAKERS)
                row = dict(key=key, shard=name, split=split, speaker=SPEAKERS[speaker], video_id=f"vid{len(index)}",
                           track=0, start_frame=0, n_frames=frames)
                meta = {**row, "speaker_index": speaker, "label": WORDS[speaker % 2], "label_index": speaker % 2,
                        "fps": 25.0, "sample_rate": 16000, "audio_start_s": -0.25, "av_offset_frames": 0}
                del meta["shard"], meta["split"]
                samples.append((key, {"meta.json": json.dumps(meta).encode(), **members(rng)}))
                index.append(row)
            write_tar(folder / name, samples)
        listed[split] = {"samples": sum(counts), "shards": names}
    dataset = {"schema_version": 1, "recipe": recipe.to_json() if recipe else {"name": method}, "fields": {},
               "speakers": SPEAKERS, "labels": list(WORDS), "fps": [25.0], "sample_rate": 16000, "splits": listed}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    pq.write_table(pa.Table.from_pylist(index), folder / "index.parquet")
    return folder


# A method small enough to train in milliseconds, for the trainer's own tests: a code -> 8 x 8 picture generator
# with dropout (a resume must restore the RNG) and batch norm (buffers DDP keeps), a discriminator, two stages.
class Toy(Method):
    name = "toy"
    stages = ("warmup", "gan")
    loss_terms = {"warmup": ("l1",), "gan": ("l1", "adversarial")}
    inputs = ("audio",)
    outputs = ("image",)

    @staticmethod
    def view(sample: dict, rng: np.random.Generator | None) -> dict:
        return {**views.identity(sample), "image": views.image(sample["image.png"]),
                "code": views.array(sample["code.npy"])}

    def __init__(self, model: dict, dataset: dict):
        width = int(model.get("width", 32))
        self.networks = {
            "generator": nn.Sequential(nn.Linear(16, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(0.3),
                                       nn.Linear(width, 3 * 8 * 8), nn.Tanh()),
            "discriminator": nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, width), nn.LeakyReLU(0.2),
                                           nn.Linear(width, 1)),
        }

    def forward(self, nets, batch, ctx):
        return {"fake": nets["generator"](batch["code"]).view(-1, 3, 8, 8), "real": batch["image"]}

    def loss(self, optimizer, nets, batch, out, weights, ctx):
        if optimizer == "discriminator":
            real, fake = real_and_fake(nets["discriminator"], (out["real"],), (out["fake"].detach(),))
            terms = {"d_real": bce(real, 1.0), "d_fake": bce(fake, 0.0)}
            return sum(terms.values()), {name: value.item() for name, value in terms.items()}
        terms = {"l1": F.l1_loss(out["fake"], out["real"])}
        if "adversarial" in weights:
            terms["adversarial"] = bce(nets["discriminator"](out["fake"]), 1.0)
        return sum(weights[n] * v for n, v in terms.items()), {f"g_{n}": v.item() for n, v in terms.items()}

    def picture_rows(self, nets, batch, out):
        return [out["real"], out["fake"].detach()]


def toy_members(rng: np.random.Generator) -> dict[str, bytes]:
    return {"image.png": png(rng, 8), "code.npy": npy(rng.normal(size=16))}


def toy_shards(folder: Path, splits: dict[str, list[int]] | None = None) -> Path:
    """Toy shards: a train split of 3 tars (5, 4 and 3 samples) and a val split, unless ``splits`` says."""
    return write_shards(folder, "toy", splits or {"train": [5, 4, 3], "val": [3]}, members=toy_members)


TOY_RECIPE = Path(__file__).with_name("toy.toml")
