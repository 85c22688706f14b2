"""avmodels: Wav2Pix's architecture, the trainer (overfitting, exact resume, stages, DDP) and the CLIs."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import soundfile
import torch

from avmodels.data import split_batches
from avmodels.methods import get_method
from avmodels.methods.wav2pix import Wav2Pix
from avmodels.training import checkpoint as checkpoints
from avmodels.training.config import load_train_config, parse_train_config
from avmodels.training.distributed import start_node
from avmodels.training.trainer import Position, StepContext, _batches, make_optimizers, train, train_step
from avprep.media.audio import decode_audio
from avprep.media.probe import probe
from avprep.shard.recipe import RecipeError, load_recipe, read_recipe
from avprep.shard.run import run_shard

SMALL = ["model.image_size=64", "train.batch_size=2", "train.num_workers=1", "train.log_every=1",
         "train.sample_every=2", "train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def shards(prep, tmp_path_factory) -> Path:
    """Wav2Pix shards of the test corpus (3 speakers x 2 clips): one clip of each speaker trains, one validates."""
    folder = tmp_path_factory.mktemp("train_shards")
    recipe = dataclasses.replace(load_recipe("wav2pix"), fractions=(("train", 0.5), ("val", 0.5)))
    run_shard(prep, folder, recipe, max_count=4)
    return folder


def run_avmodels(*args: str, wrapper: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = [*wrapper, "-m", "avmodels.cli", *args] if wrapper else [sys.executable, "-m", "avmodels.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_parameter_counts_match_the_official_code():
    at128 = Wav2Pix({"image_size": 128}, {"speakers": list("abcdefghij")}).networks
    assert count(at128["speech_encoder"]) == 11_495_424
    assert count(at128["speaker_classifier"]) == 28_230
    assert count(at128["generator"]) == 13_241_344
    assert sum(count(at128[name]) for name in ("speech_encoder", "speaker_classifier", "generator")) == 24_764_998
    assert count(at128["discriminator"]) == 11_162_624
    at64 = Wav2Pix({"image_size": 64}, {"speakers": list("abcdefghij")}).networks
    assert sum(count(at64[name]) for name in ("speech_encoder", "speaker_classifier", "generator")) == 15_327_814
    assert count(at64["discriminator"]) == 2_765_824


def test_shapes_and_the_official_losses_and_optimisers():
    config = load_train_config("wav2pix")
    stage = config.stages[0]
    assert stage.losses == {"adversarial": 1.0, "feature_matching": 100.0, "l1": 50.0, "speaker": 20.0}
    assert [(o.name, o.lr, o.betas) for o in stage.optimizers] == [
        ("discriminator", 4e-4, (0.5, 0.999)), ("generator", 1e-4, (0.5, 0.999))]
    method = Wav2Pix(config.model, {"speakers": ["a", "b", "c"]})
    batch = {"audio": torch.randn(2, 16000), "image": torch.rand(2, 3, 128, 128) * 2 - 1,
             "wrong": torch.rand(2, 3, 128, 128) * 2 - 1, "speaker": torch.tensor([0, 2])}
    out = method.forward(method.networks, batch)
    assert out["z"].shape == (2, 128) and out["fake"].shape == (2, 3, 128, 128)
    assert out["fake"].abs().max() <= 1 and out["speaker_logits"].shape == (2, 3)
    _, terms = method.loss("discriminator", method.networks, batch, out, stage.losses)
    assert set(terms) == {"d_fake", "d_real", "d_wrong"}


def test_a_fixed_batch_is_overfit(shards):
    """L1 to the target faces falls by at least half in 200 steps with the recipe's losses and optimisers.

    Dropout is off, as usual for an overfit-one-batch check: with it on, the generator's output stays noisy and
    the fall is ~50% rather than ~80%.
    """
    config = load_train_config("wav2pix", overrides=["model.image_size=64", "model.dropout=0.0"])
    stage = config.stages[0]
    torch.manual_seed(0)
    method = Wav2Pix(config.model, {"speakers": ["a", "b", "c"]})
    batch = next(split_batches(shards, "train", "wav2pix", "cpu", batch_size=2))
    optimizers, schedulers = make_optimizers(stage, method.networks)
    l1 = []
    for step in range(200):
        ctx = StepContext(stage.name, step, step, 0)
        _, losses = train_step(method, method.networks, method.networks, batch, stage, optimizers, schedulers, ctx)
        l1.append(losses["g_l1"])
    assert sum(l1[-5:]) / 5 <= 0.5 * l1[0], l1[::20]


def test_a_resumed_run_equals_an_uninterrupted_one(shards, tmp_path):
    train_samples = json.loads((shards / "dataset.json").read_text())["splits"]["train"]["samples"]
    batch = f"train.batch_size={max(2, train_samples // 2)}"  # two batches an epoch: the run crosses epochs
    config = load_train_config("wav2pix", overrides=[*SMALL, batch])
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(config, shards, whole, max_steps=5, device="cpu")
    train(config, shards, parts, max_steps=2, device="cpu")
    assert checkpoints.load(parts / "checkpoint.pt")["step"] == 2
    train(config, shards, parts, max_steps=5, resume=True, device="cpu")
    first, second = metrics(whole), metrics(parts)
    assert [row["step"] for row in second] == [1, 2, 3, 4, 5]
    assert {row["epoch"] for row in first} == {0, 1, 2}, "the run must cross epoch boundaries"
    for a, b in zip(first, second):
        for name in a:
            if name.startswith(("d_", "g_")):
                assert b[name] == pytest.approx(a[name], rel=1e-5, abs=1e-7), (a["step"], name)
    for name in ("generator", "discriminator", "speech_encoder"):
        for key, value in checkpoints.load(whole / "checkpoint.pt")["networks"][name].items():
            assert torch.allclose(value.float(), checkpoints.load(parts / "checkpoint.pt")["networks"][name][key].float(),
                                  rtol=1e-4, atol=1e-6), key
    assert sorted(p.name for p in (whole / "samples").iterdir()) == ["step-0000002.png", "step-0000004.png"]


def test_stages_train_only_their_networks_and_hand_over_weights(shards, tmp_path):
    recipe = tmp_path / "two_stages.toml"
    recipe.write_text("""
[model]
image_size = 64
[train]
batch_size = 2
num_workers = 0
log_every = 1
[[train.stages]]
name = "reconstruct"
steps = 2
losses = { l1 = 1.0 }
[train.stages.optimizers.generator]
networks = ["speech_encoder", "generator"]
lr = 1e-3
[[train.stages]]
name = "gan"
steps = 2
init_from = "reconstruct"
losses = { adversarial = 1.0, l1 = 50.0 }
[train.stages.optimizers.discriminator]
networks = ["discriminator"]
lr = 4e-4
every = 2
[train.stages.optimizers.generator]
networks = ["speech_encoder", "generator"]
lr = 1e-4
""")
    config = load_train_config("wav2pix", str(recipe))
    run = tmp_path / "run"
    torch.manual_seed(config.seed)
    initial = Wav2Pix(config.model, {"speakers": ["a", "b", "c"]}).networks["discriminator"].state_dict()
    train(config, shards, run, device="cpu")
    after_first = checkpoints.load(run / "stage-reconstruct.pt")["networks"]
    for key, value in initial.items():
        assert torch.equal(value, after_first["discriminator"][key]), "a frozen network changed"
    rows = metrics(run)
    assert [row["stage"] for row in rows] == ["reconstruct"] * 2 + ["gan"] * 2
    assert [("d_fake" in row) for row in rows] == [False, False, True, False], "D steps every second step"
    assert any(not torch.equal(v, after_first["generator"][k])
               for k, v in checkpoints.load(run / "stage-gan.pt")["networks"]["generator"].items())
    train(config, shards, run, device="cpu", start_stage="gan")  # a stage again: the history and steps go on
    rows = metrics(run)
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert [row["stage"] for row in rows] == ["reconstruct"] * 2 + ["gan"] * 4


def test_a_stage_takes_its_own_batch_size(shards):
    config = load_train_config("wav2pix", overrides=["train.batch_size=2", "train.num_workers=0",
                                                     "train.stages.gan.batch_size=3"])
    stage = config.stages[0]
    batches = _batches(config, "wav2pix", stage, shards, start_node("cpu"), Position(), 8)
    assert len(next(batches)["key"]) == 3


def test_sample_and_eval_write_their_files(shards, prep, tmp_path):
    config = load_train_config("wav2pix", overrides=SMALL)
    run = tmp_path / "run"
    train(config, shards, run, max_steps=2, device="cpu")
    clip = next((prep / "videos").iterdir())
    audio = tmp_path / "speech.flac"
    (Path(str(audio))).write_bytes((clip / "audio.flac").read_bytes())
    result = run_avmodels("sample", "-c", str(run / "checkpoint.pt"), "-a", str(audio), "-o", str(tmp_path / "s.png"))
    assert result.returncode == 0, result.stderr
    picture = cv2.imread(str(tmp_path / "s.png"))
    assert picture.shape[0] == 64 and picture.shape[1] >= 64  # one row of 64 px faces, one per second
    result = run_avmodels("sample", "-c", str(run / "checkpoint.pt"), "-a", str(audio), "-o", str(tmp_path / "t.mp4"))
    assert result.returncode == 0, result.stderr
    video = probe(tmp_path / "t.mp4")
    seconds = soundfile.info(str(audio)).duration
    assert (video.width, video.height, video.audio_codec, video.fps) == (64, 64, "aac", 25.0)
    assert video.n_packets == round(seconds * 25)  # a face for every frame of the speech
    assert abs(len(decode_audio(tmp_path / "t.mp4", 1)) / 16000 - seconds) < 1 / 25
    result = run_avmodels("sample", "-c", str(run / "checkpoint.pt"), "-o", str(tmp_path / "t.mp4"))
    assert result.returncode == 2 and "give --audio" in result.stdout
    result = run_avmodels("eval", "-m", "wav2pix", "-d", str(shards), "-c", str(run / "checkpoint.pt"),
                          "--split", "val", "--limit", "3", "-o", str(tmp_path / "eval.json"))
    assert result.returncode == 0, result.stderr + result.stdout
    scores = json.loads((tmp_path / "eval.json").read_text())
    for name in ("face_detectability", "dlib_detectability", "speaker_id_accuracy", "identity_accuracy"):
        assert 0.0 <= scores[name] <= 1.0 and 0.0 <= scores[f"{name}_real"] <= 1.0, name
    assert scores["face_detectability_real"] >= 0.9 and scores["dlib_detectability_real"] >= 0.9
    assert scores["identity_similarity_real"] > 0.85 and scores["identity_accuracy_real"] >= 0.6
    assert scores["samples"] == 3 and (tmp_path / "eval.png").is_file()


def test_two_process_ddp_ranks_agree_on_the_weights(shards, tmp_path):
    run = tmp_path / "ddp"
    settings = [arg for setting in SMALL for arg in ("--set", setting)]
    result = run_avmodels("train", "-m", "wav2pix", "-d", str(shards), "-o", str(run), "--max-steps", "3",
                          "--device", "cpu", *settings,
                          wrapper=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                   "--master_port", "29533"))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    digests = summary["weights_sha1_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert metrics(run)[-1]["samples_per_s"] > 0


def test_clear_errors(shards, tmp_path):
    result = run_avmodels("train", "-m", "nosuch", "-d", str(shards))
    assert result.returncode == 2 and "no recipe named 'nosuch'" in result.stdout
    with pytest.raises(RecipeError, match="only the data half"):
        parse_train_config("headgan", read_recipe("headgan")[1] | {"train": {}})
    result = run_avmodels("train", "-m", "davs", "-d", str(shards), "-o", str(tmp_path / "davs"))
    assert result.returncode == 2 and "DAVS trains on word labels and these shards have none" in result.stdout
    with pytest.raises(RecipeError, match="no stage named 'gann'"):
        load_train_config("wav2pix", overrides=["train.stages.gann.steps=3"])
    result = run_avmodels("train", "-m", "wav2pix", "-d", str(shards), "-o", str(tmp_path / "none"), "--resume")
    assert result.returncode == 2 and "no checkpoint" in result.stdout
    result = run_avmodels("eval", "-m", "wav2pix", "-d", str(shards), "--split", "test")
    assert result.returncode == 2 and "the 'test' split holds no samples" in result.stdout


def test_checkpoints_load_without_pickle(tmp_path):
    """A checkpoint that would unpickle an arbitrary object (here argparse.Namespace) is refused."""
    torch.save({"networks": argparse.Namespace(payload=1)}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        checkpoints.load(tmp_path / "evil.pt")


def test_overrides_reach_stages_and_optimisers():
    config = load_train_config("wav2pix", overrides=[
        "train.stages.gan.steps=7", "train.stages.gan.optimizers.discriminator.every=2", "model.image_size=64",
        "train.precision=bf16"])
    stage = config.stages[0]
    assert (stage.steps, stage.epochs, stage.optimizers[0].every) == (7, None, 2)
    assert config.model["image_size"] == 64 and config.precision == "bf16"
    assert load_train_config("wav2pix").stages[0].total_steps(samples_per_epoch=640, batch_size=64, world_size=2) == 1000


def test_an_optimiser_can_move_one_of_its_networks_at_a_multiple_of_its_rate():
    """Ear-SR's fuse stage: F learns at 1e-4 while E_a, already trained, is fine-tuned at a tenth of that."""
    config = load_train_config("ear_sr", overrides=["model.width=0.125"])
    nets = get_method("ear_sr")(config.model, {}).networks
    optimizers, schedulers = make_optimizers(next(s for s in config.stages if s.name == "fuse"), nets)
    groups = optimizers["fusion"].param_groups
    assert [g["lr"] for g in groups] == [1e-4, 1e-5] and schedulers["fusion"].base_lrs == [1e-4, 1e-5]
    assert groups[1]["params"] == list(nets["audio_encoder"].parameters())
    with pytest.raises(RecipeError, match="lr_scale maps some of its networks"):
        load_train_config("ear_sr", overrides=["train.stages.fuse.optimizers.fusion.lr_scale={ generator = 2 }"])


@pytest.mark.slow
@pytest.mark.parametrize("method, steps", [("wav2pix", 4), ("atvgnet", 8), ("davs", 4), ("headgan", 2),
                                           ("ear_sr", 2)])
def test_quickstart_runs_the_whole_chain(tmp_path, method, steps):
    """`avmodels quickstart`: demo media -> extract -> shard -> train -> sample -> eval, every output there."""
    result = run_avmodels("quickstart", str(tmp_path / "qs"), "--method", method, "--steps", str(steps))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for path in ("eval.json", "eval.png", "run/checkpoint.pt", "run/metrics.jsonl",
                 "shards/dataset.json",
                 *{"wav2pix": ("sample.png", "talking.mp4"), "ear_sr": ("sample.png", "eval-closed.json")}.get(method, ("talking.mp4",
                                                                                                      "eval/")),
                 *(("driven.mp4", "demo/lipread_mp4/ABOUT/test/ABOUT_00001.mp4") if method == "davs" else ())):
        assert (tmp_path / "qs" / path).exists(), path
    if method == "headgan":  # the demo's speech heard by pocketsphinx; cross-identity videos among eval's
        assert all(json.loads(p.read_text())["transcript_source"] == "pocketsphinx"
                   for p in (tmp_path / "qs" / "prep" / "videos").glob("*/record.json"))
        assert list((tmp_path / "qs" / "eval").glob("cross-*.mp4"))
    stages = {"wav2pix": 1, "atvgnet": 2, "davs": 2, "headgan": 1, "ear_sr": 6}[method]  # DAVS: no pid_pretrain
    assert json.loads((tmp_path / "qs" / "eval.json").read_text())["step"] == steps * stages


def test_list_names_methods_stages_and_recipes():
    result = run_avmodels("list")
    assert result.returncode == 0, result.stderr
    assert "wav2pix" in result.stdout and "gan" in result.stdout and "200 epochs" in result.stdout
    assert "x0.1" in result.stdout  # Ear-SR fine-tunes E_a at a tenth of the fusion rate
    counts = json.loads(run_avmodels("list", "--params", "--json").stdout)
    assert counts["atvgnet"] == {"at_net": 30_071_750, "vg_net": 58_355_781, "discriminator": 20_896_905,
                                 "landmark_pca": 0}
    assert counts["wav2pix"]["generator"] == 13_241_344
    assert counts["davs"]["decoder"] == 22_404_547 and counts["davs"]["word_classifier"] == 1_829_876  # 500 words
    assert "--reference + --audio or --driving -> video" in result.stdout


def test_a_network_starts_from_a_user_file_and_pickled_objects_are_refused(shards, tmp_path):
    donor = Wav2Pix({"image_size": 64}, {"speakers": ["a", "b", "c"]}).networks["speech_encoder"]
    torch.save({"state_dict": {f"module.{k}": v for k, v in donor.state_dict().items()}}, tmp_path / "encoder.pt")
    config = load_train_config("wav2pix", overrides=[
        *SMALL, f'train.init.speech_encoder={{ file = "{tmp_path / "encoder.pt"}", strip_prefix = "module." }}',
        "train.stages.gan.optimizers.generator.networks=['generator']"])  # the encoder stays as loaded
    train(config, shards, tmp_path / "run", max_steps=1, device="cpu")
    loaded = checkpoints.load(tmp_path / "run" / "checkpoint.pt")["networks"]["speech_encoder"]
    assert all(torch.equal(loaded[k], v) for k, v in donor.state_dict().items())
    torch.save({"speech_encoder": argparse.Namespace(payload=1)}, tmp_path / "evil.pt")
    evil = load_train_config("wav2pix", overrides=[
        *SMALL, f'train.init.speech_encoder={{ file = "{tmp_path / "evil.pt"}" }}'])
    with pytest.raises(ValueError, match="weights_only=True"):
        train(evil, shards, tmp_path / "evil", max_steps=1, device="cpu")
    missing = load_train_config("wav2pix", overrides=[*SMALL, 'train.init.speech_encoder={ file = "nope.pt" }'])
    with pytest.raises(FileNotFoundError, match="train.init.speech_encoder"):
        train(missing, shards, tmp_path / "missing", max_steps=1, device="cpu")


def test_a_decay_holds_the_rate_for_its_share_of_the_stage_then_falls_to_zero():
    """HeadGAN's schedule: 6 of 10 epochs at full rate, then linear to zero; warm-up counts updates."""
    from avmodels.training.config import OptimizerSpec
    from avmodels.training.trainer import _schedule

    progress = [0.0]
    linear = _schedule(OptimizerSpec("g", ("x",), 1.0, schedule="linear", hold=0.6), lambda: progress[0])
    cosine = _schedule(OptimizerSpec("g", ("x",), 1.0, schedule="cosine", warmup_steps=4), lambda: progress[0])
    values = []
    for progress[0] in (0.0, 0.3, 0.6, 0.8, 1.0):
        values.append((linear(100), cosine(100)))
    assert [v[0] for v in values] == pytest.approx([1, 1, 1, 0.5, 0])
    assert [v[1] for v in values] == pytest.approx([1, 0.7939, 0.3455, 0.0955, 0], abs=1e-4)
    assert cosine(1) == pytest.approx(0.5)  # the second of 4 warm-up updates
    with pytest.raises(RecipeError, match="0 <= hold < 1"):
        load_train_config("wav2pix", overrides=["train.stages.gan.optimizers.generator.hold=1.0"])
