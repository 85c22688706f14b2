"""DAVS: the networks' official parameter counts (or why not) and forward shapes, then the method: the view's
draws, each stage's losses, user-file init, sampling with fine-tuning, and evaluation."""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import soundfile
import torch
from support import assert_beside_baselines, avmodels_here

from avmodels import checkpoints
from avmodels.data import make_dataset, shard_urls, split_batches, view_with
from avmodels.methods import get_method, load_trained
from avmodels.methods.davs import DAVS
from avmodels.methods.davs.networks import (
    AudioWordEncoder,
    Decoder,
    EmbeddingDiscriminator,
    IdentityDiscriminator,
    PersonIdEncoder,
    SequenceDiscriminator,
    VisualWordEncoder,
    WordClassifier,
)
from avmodels.methods.davs.view import view as davs_view
from avmodels.training.config import load_train_config
from avmodels.training.trainer import StepContext, make_optimizers, train, train_step
from avprep.media.audio import decode_audio
from avprep.media.probe import probe
from avprep.shard.recipe import load_recipe
from avprep.shard.run import run_shard

# Official counts, less the layers no official forward pass calls (left out: they would break DDP).
EXPECTED = {
    PersonIdEncoder: 15_619_584,
    VisualWordEncoder: 8_414_486 - 1_638_656 - 613 - 262_400,  # FAN_use's conv5, conv6 and fc
    AudioWordEncoder: 1_603_136 - 1_024,  # mfcc_encoder's bn5
    Decoder: 22_404_547,
    WordClassifier: 1_830_389 - 513,  # the 512 -> 1 head
    EmbeddingDiscriminator: 66_049,
    IdentityDiscriminator: 1_412_277,
    SequenceDiscriminator: 19_019_332 - 512 - 1_024 - 2 - 1_024,  # conv8, bn7, bn8 and bn9
}


@pytest.mark.parametrize("network", list(EXPECTED), ids=lambda n: n.__name__)
def test_parameter_counts(network):
    with torch.device("meta"):
        assert sum(p.numel() for p in network().parameters()) == EXPECTED[network]


def test_every_network_within_one_percent_of_the_official_count_but_the_visual_encoder():
    official = {VisualWordEncoder: 8_414_486, AudioWordEncoder: 1_603_136, WordClassifier: 1_830_389,
                SequenceDiscriminator: 19_019_332}
    for network, count in official.items():
        gap = abs(EXPECTED[network] - count) / count
        assert (gap < 0.01) != (network is VisualWordEncoder), network.__name__


def test_the_official_forward_shapes():
    torch.manual_seed(0)
    faces = torch.rand(2, 3, 256, 256)
    person = PersonIdEncoder().eval()
    with torch.no_grad():
        identity = person(faces)
        assert [tuple(x.shape) for x in identity] == [(2, 256), (2, 256, 8, 8), (2, 320, 16, 16), (2, 160, 32, 32),
                                                       (2, 64, 64, 64)]
        visual = VisualWordEncoder().eval()(faces)
        audio = AudioWordEncoder().eval()(torch.randn(2, 20, 12))
        assert visual.shape == audio.shape == (2, 256)
        made = Decoder().eval()(identity, audio)
        assert made.shape == (2, 3, 256, 256) and 0 <= made.min() and made.max() <= 1
        assert WordClassifier().eval()(torch.randn(2, 12, 256)).shape == (2, 500)
        assert EmbeddingDiscriminator()(audio).shape == (2,)
        assert IdentityDiscriminator().eval()(identity[4].repeat(10, 1, 1, 1)).shape == (1, 500)  # 20 frames
        patches, sync = SequenceDiscriminator().eval()(torch.rand(2, 18, 256, 256), torch.randn(2, 6, 20, 12))
        assert patches.shape == (2, 1, 30, 30) and sync.shape == (2,)


# The method: the view's draws, each stage's losses, training and resuming, sampling and evaluation.

SMALL = ["model.width=0.125", "train.num_workers=1", "train.log_every=1", "train.sample_every=2",
         "train.checkpoint_every=2", "train.batch_size=2", "train.stages.pid_pretrain.steps=1",
         "train.stages.word_pretrain.steps=2", "train.stages.disentangle.steps=2"]


@pytest.fixture(scope="module")
def shards(shards_for) -> Path:
    """DAVS shards of the LRW-shaped test tree: 25-frame clips of two words, the tree's own splits, with audio."""
    return shards_for("davs", source="lrw", split_by="dataset")


def test_the_word_classifier_is_the_officials_two_layers_with_a_relu_between():
    """Parameter counts cannot tell a ReLU apart: an affine map has f(a) + f(b) - f(0) = f(a + b), this must not;
    and the first layer starts as the official's, N(0, 1e-4) with zero bias."""
    torch.manual_seed(0)
    classifier = WordClassifier(words=7)
    assert classifier.fc1.weight.std().item() == pytest.approx(1e-4, rel=0.05) and not classifier.fc1.bias.any()
    with torch.no_grad():
        classifier.fc1.weight.normal_(0, 0.02)  # half its units off for these inputs: far from affine
        a, b, zero = torch.randn(1, 12, 256), torch.randn(1, 12, 256), torch.zeros(1, 12, 256)
        gap = classifier(a) + classifier(b) - classifier(zero) - classifier(a + b)
        relu_free = classifier.fc2(classifier.fc1(a.flatten(1)))
    assert gap.abs().max() > 1e-2 and not torch.allclose(classifier(a), relu_free)


def test_the_view_draws_as_the_official_loader_and_evaluation_takes_frame_zero(shards):
    sample = next(iter(make_dataset(shard_urls(shards, "train"), view_with(DAVS.view), train=False)))
    assert sample["frames"].shape == (25, 3, 256, 256) and sample["mfcc"].shape == (25, 20, 12)
    assert sample["audio"].shape == (16000,) and int(sample["label"]) in (0, 1)
    assert sample["classified"].tolist() == list(range(0, 24, 2))
    assert (int(sample["generated"]), int(sample["identity_start"]), int(sample["reference_index"])) == (0, 0, 0)
    rng = np.random.default_rng(0)
    members = first_decoded(shards, "train")
    draws = [davs_view(members, rng) for _ in range(200)]
    assert {int(d["classified"][0]) for d in draws} == {0, 1}
    assert {int(d["generated"]) for d in draws} == set(range(7))  # 6 of the 12 classified frames
    assert {int(d["identity_start"]) for d in draws} == set(range(6))  # 20 consecutive of 25
    assert {int(d["reference_index"]) for d in draws} == set(range(25))


def first_decoded(shards: Path, split: str) -> dict:
    """A sample as views receive it (decoded but for its images)."""
    return next(iter(make_dataset(shard_urls(shards, split), lambda sample, rng: sample, train=False)))


def test_without_word_labels_the_method_and_the_view_say_how_to_get_them(prep, tmp_path):
    with pytest.raises(ValueError, match="LRW tree.*--meta CSV with a 'label' column"):
        DAVS({}, {"speakers": ["a"], "labels": []})
    run_shard(prep, tmp_path, load_recipe("davs"), max_count=1)
    members = first_decoded(tmp_path, "train")
    with pytest.raises(ValueError, match="DAVS trains on word labels"):
        davs_view(members, None)


def fixed_batch_losses(shards, stage_name: str, steps: int, keys: tuple[str, ...]) -> list[float]:
    config = load_train_config("davs", overrides=["model.width=0.125"])
    stage = next(s for s in config.stages if s.name == stage_name)
    torch.manual_seed(0)
    method = DAVS(config.model, json.loads((shards / "dataset.json").read_text()))
    batch = next(split_batches(shards, "train", get_method("davs").view, "cpu", batch_size=2))
    optimizers, schedulers = make_optimizers(stage, method.networks)
    for name, net in method.networks.items():
        net.train(name in stage.networks)
    values = []
    for step in range(steps):
        _, losses = train_step(method, method.networks, method.networks, batch, stage, optimizers, schedulers,
                               StepContext(stage.name, step, step, 0))
        values.append(sum(losses[key] for key in keys))
    return values


def test_pid_pretraining_fits_a_fixed_batch(shards):
    errors = fixed_batch_losses(shards, "pid_pretrain", 25, ("pid_ce",))
    assert sum(errors[-3:]) / 3 < 0.3 * errors[0], errors


def test_word_pretraining_fits_a_fixed_batch(shards):
    errors = fixed_batch_losses(shards, "word_pretrain", 15, ("words_audio", "words_visual"))
    assert sum(errors[-3:]) / 3 < 0.3 * errors[0], errors


def test_disentangling_fits_a_fixed_batch(shards):
    errors = fixed_batch_losses(shards, "disentangle", 9, ("g_frame", "g_mouth"))
    assert sum(errors[-3:]) / 3 < 0.85 * errors[0], errors  # about -20% in 9 steps at lr 2e-4


STAGE_LOSSES = load_train_config("davs").stages[2].losses  # disentangle's


def test_the_generator_loss_runs_under_bf16_autocast_with_the_uniform_term_in_float32(shards):
    method = DAVS({"width": 0.125}, json.loads((shards / "dataset.json").read_text()))
    batch = next(split_batches(shards, "train", get_method("davs").view, "cpu", batch_size=2))
    ctx = StepContext("disentangle", 0, 0, 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method.forward(method.networks, batch, ctx)
        assert out["person_sequence"].dtype == torch.bfloat16
        for optimizer in ("discriminators", "generator"):
            loss, terms = method.loss(optimizer, method.networks, batch, out, STAGE_LOSSES, ctx)
            assert loss.dtype == torch.float32 and np.isfinite(list(terms.values())).all()
        assert method._identity_uniform(method.networks, out["person_sequence"]).dtype == torch.float32


@pytest.fixture(scope="module")
def trained(trained_for) -> Path:
    """Every stage briefly (the session's run; sampling fine-tunes 2 steps, not the official 5): what sampling
    and evaluation read."""
    return trained_for("davs") / "checkpoint.pt"


def test_a_lightcnn_person_encoder_starts_from_a_user_file_with_a_module_prefix(shards, tmp_path):
    """train.init: DataParallel's ``module.`` keys are stripped; the frozen encoder keeps the file's weights."""
    torch.manual_seed(5)
    donor = PersonIdEncoder(0.125).state_dict()
    torch.save({f"module.{key}": value for key, value in donor.items()}, tmp_path / "lightcnn.pt")
    config = load_train_config("davs", overrides=[
        *SMALL, f'train.init.person_encoder.file="{tmp_path / "lightcnn.pt"}"',
        'train.init.person_encoder.strip_prefix="module."'])
    train(config, shards, tmp_path / "run", start_stage="word_pretrain", max_steps=1, device="cpu")
    loaded = checkpoints.load(tmp_path / "run" / "checkpoint.pt")["networks"]["person_encoder"]
    assert all(torch.equal(loaded[key], value) for key, value in donor.items())
    torch.save({"encoder": argparse.Namespace(weights=1)}, tmp_path / "pickled.pt")
    pickled = load_train_config("davs", overrides=[
        *SMALL, f'train.init.person_encoder.file="{tmp_path / "pickled.pt"}"'])
    with pytest.raises(ValueError, match="not a plain state dict"):
        train(pickled, shards, tmp_path / "refused", device="cpu")


def test_audio_and_video_driven_samples_are_mp4s_with_sound_and_leave_the_checkpoint_unchanged(trained, lrw_prep,
                                                                                                 tmp_path):
    before = hashlib.sha1(trained.read_bytes()).hexdigest()
    clip = next(p for p in (lrw_prep / "videos").iterdir())
    speech = clip / "audio.flac"
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    driving = next(lrw_prep.parent.glob("datasets*/lipread_mp4/ABOUT/test/*.mp4"))
    seconds = soundfile.info(str(speech)).duration
    for name, given in (("audio", ("--audio", str(speech))), ("video", ("--driving", str(driving)))):
        out = tmp_path / f"{name}.mp4"
        result = avmodels_here("sample", "-c", str(trained), "--reference", str(photo), *given, "-o", str(out))
        assert result.exit_code == 0, result.output
        video = probe(out)
        assert (video.width, video.height, video.audio_codec) == (256, 256, "aac")
        assert abs(video.n_packets / video.fps - seconds) <= 1 / video.fps
        assert abs(len(decode_audio(out, 1)) / 16000 - seconds) <= 1 / video.fps
    assert hashlib.sha1(trained.read_bytes()).hexdigest() == before
    missing = avmodels_here("sample", "-c", str(trained), "--reference", str(photo), "-o", str(tmp_path / "x.mp4"))
    assert missing.exit_code == 2 and "--audio (audio-driven) or --driving" in missing.output


def test_fine_tuning_works_on_copies(trained):
    method, nets, _ = load_trained(trained)
    before = {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in nets.items()}
    reference = torch.rand(1, 3, 256, 256)
    tuned = method.fine_tuned(nets, reference, torch.randn(5, 20, 12), ("person_encoder", "decoder", "audio_encoder"))
    changed = any(not torch.equal(tuned["decoder"].state_dict()[k], v) for k, v in before["decoder"].items())
    assert changed and tuned["decoder"] is not nets["decoder"]
    for name, net in nets.items():
        assert all(torch.equal(net.state_dict()[k], v) for k, v in before[name].items()), name


def test_eval_reports_word_accuracy_and_the_generation_measures(trained, shards, tmp_path):
    result = avmodels_here("eval", "-m", "davs", "-d", str(shards), "-c", str(trained), "--limit", "1",
                           "-o", str(tmp_path / "eval.json"))
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert "word_accuracy_*" in scores["protocols"]  # which protocol each number follows (review #6)
    for name in ("word_accuracy_audio", "word_accuracy_visual", "word_accuracy_both", "ssim", "ssim_from_video",
                 "sync_real_confidence", "identity_similarity_real"):
        assert 0 <= scores[name] <= 1, name
    assert scores["word_accuracy_audio_baseline"] == 0.5 and scores["samples"] == 1  # chance among 2 words
    assert_beside_baselines(scores, "davs")
    for name in ("psnr", "psnr_from_video", "psnr_baseline"):  # frame 0, the reference itself, is not scored
        assert 0 < scores[name] < 100, name
    assert 0 <= scores["lmd_baseline"] and 0 <= scores["ssim_baseline"] <= 1
    assert scores["video_from_audio_r1"] == scores["audio_from_video_r1"] == scores["video_from_audio_r1_baseline"] \
        == 100
    assert scores["video_from_audio_median_rank"] == 1  # one clip: its own pair is first
    assert len(list((tmp_path / "eval").glob("*.mp4"))) == 1 and (tmp_path / "eval.png").is_file()


def test_retrieval_ranks_each_querys_own_clip_as_the_official_l2retrieval():
    from avmodels.methods.davs import retrieval

    clips = torch.nn.functional.normalize(torch.randn(20, 64), dim=1)
    assert retrieval("x", clips, clips) == {"x_r1": 100.0, "x_r5": 100.0, "x_r10": 100.0, "x_median_rank": 1.0}
    shuffled = retrieval("x", clips, clips.roll(1, dims=0))  # each query's pair moved: found only by chance
    assert shuffled["x_r1"] <= 10 and shuffled["x_median_rank"] > 3




def test_the_mfcc_windows_are_the_official_ones():
    """savemfcc.m gives frame l the 100 Hz rows 4l-7 .. 4l+12 of mfcc.m (1-based; frame l at 40 l ms, row c
    centred at 10 (c - 1) + 12.5 ms): centres from 67.5 ms before the frame to 122.5 ms after (review #14)."""
    from avprep.shard.recipe import load_recipe

    recipe = load_recipe("davs")
    first, last = recipe.mfcc_start_s, recipe.mfcc_start_s + (recipe.mfcc_rows - 1) / 100
    assert recipe.mfcc == "davs" and recipe.mfcc_rows == 20
    assert abs(first - -0.0675) <= 0.005 and abs(last - 0.1225) <= 0.005


def test_the_networks_start_from_the_official_initialisation():
    """Review #10: LightCNN's per-block fillers (1/sqrt(9 x out); the 7 x 7 stem 1/sqrt(49 x 32)), the decoder's
    Kaiming-normal fan-out, the discriminators' N(0, 0.02) convolutions and N(1, 0.02) batch norm."""
    torch.manual_seed(0)
    person = PersonIdEncoder()
    assert abs(person.stem.a[0].weight.std().item() - 0.025253814) < 0.002  # IdentityEncoder.py's figure
    assert abs(person.group2[0].a[0].weight.std().item() - 0.034020692) < 0.001  # block 21
    assert abs(person.group4[0].b[0].weight.std().item() - 0.020833334) < 0.0005  # block 41: 5 x 5, filled as 3 x 3
    assert not person.stem.a[0].bias.any()
    decoder = Decoder(width=0.25)
    conv = decoder.blocks[2][0]
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() - (2 / fan_out) ** 0.5) < 0.1 * (2 / fan_out) ** 0.5
    for discriminator in (SequenceDiscriminator(width=0.25), IdentityDiscriminator(width=0.25)):
        for module in discriminator.modules():
            if isinstance(module, torch.nn.Conv2d) and module.weight.numel() >= 1000:
                assert abs(module.weight.std().item() - 0.02) < 0.002, module
            if isinstance(module, torch.nn.BatchNorm2d):
                assert (module.weight - 1).abs().max() < 0.1 and not module.bias.any()
