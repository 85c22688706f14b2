"""The generic trainer on a toy method and synthetic shards (exact resume across epochs and stages, stages that
train only their networks, checkpoints that leave out what stage files hold, DDP, user weights, schedules,
recipe checks) and the `avmodels` commands' errors and listing."""
from __future__ import annotations

import argparse
import json
import re

import pytest
import torch
from support import TOY_RECIPE, avmodels_here, free_port, torchrun, toy_shards

from avmodels import checkpoints
from avmodels.methods import get_method, load_trained
from avmodels.training.config import load_train_config, parse_train_config
from avmodels.training.distributed import start_node
from avmodels.training.trainer import Position, _batches, make_optimizers, train
from avprep.shard.folder import ShardDir
from avprep.shard.recipe import RecipeError, read_recipe

pytestmark = pytest.mark.usefixtures("toy")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return toy_shards(tmp_path_factory.mktemp("toy_shards") / "shards")


def toy_config(*overrides: str):
    return load_train_config("toy", str(TOY_RECIPE), list(overrides))


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(run) -> dict:
    return checkpoints.load(run / "checkpoint.pt")["networks"]


@pytest.fixture(scope="module")
def whole(shards, tmp_path_factory, toy):
    """The uninterrupted run (2 warm-up steps, 4 GAN steps) that the resumed ones must equal."""
    run = tmp_path_factory.mktemp("toy_whole")
    train(toy_config("train.num_workers=1"), shards, run, device="cpu")
    return run


@pytest.mark.parametrize("stop", [1, 3, 5])
def test_a_resumed_run_equals_an_uninterrupted_one(shards, whole, tmp_path, stop):
    """Stopped in the first stage, in the second and in its second epoch (12 training samples, batches of 2,
    one worker: 6 batches an epoch), then resumed: the same losses at every step and the same weights."""
    config, parts = toy_config("train.num_workers=1"), tmp_path / "parts"
    train(config, shards, parts, max_steps=stop, device="cpu")
    assert checkpoints.load(parts / "checkpoint.pt")["step"] == stop
    train(config, shards, parts, resume=True, device="cpu")
    first, second = metrics(whole), metrics(parts)
    assert [row["step"] for row in second] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(first, second):
        assert {k: v for k, v in a.items() if k.startswith(("d_", "g_"))} == pytest.approx(
            {k: v for k, v in b.items() if k.startswith(("d_", "g_"))}, rel=1e-6), a["step"]
    for name, state in weights(whole).items():
        assert all(torch.equal(value, weights(parts)[name][key]) for key, value in state.items()), name
    assert sorted(p.name for p in (whole / "samples").iterdir()) == [f"step-000000{i}.png" for i in (2, 4, 6)]


def test_stages_train_only_their_networks_and_hand_over_weights(whole, shards, toy):
    torch.manual_seed(0)
    initial = get_method("toy")({"width": 32}, {}).networks["discriminator"].state_dict()
    after_warmup = checkpoints.load(whole / "stage-warmup.pt")["networks"]
    assert all(torch.equal(value, after_warmup["discriminator"][key]) for key, value in initial.items())
    rows = metrics(whole)
    assert [row["stage"] for row in rows] == ["warmup"] * 2 + ["gan"] * 4
    assert [("d_fake" in row) for row in rows] == [False, False, True, False, True, False], "D every second step"
    final = checkpoints.load(whole / "stage-gan.pt")["networks"]
    assert any(not torch.equal(v, after_warmup["generator"][k]) for k, v in final["generator"].items())


def test_a_stage_run_again_continues_the_history(whole, shards, tmp_path):
    run = tmp_path / "again"
    run.mkdir()
    for name in ("checkpoint.pt", "stage-warmup.pt", "stage-gan.pt", "metrics.jsonl"):
        (run / name).write_bytes((whole / name).read_bytes())
    train(toy_config(), shards, run, device="cpu", start_stage="gan")  # from the warm-up's weights, steps go on
    rows = metrics(run)
    assert [row["step"] for row in rows] == list(range(1, 11))
    assert [row["stage"] for row in rows] == ["warmup"] * 2 + ["gan"] * 8


def test_the_last_step_of_every_stage_is_logged_however_long_the_log_window(shards, tmp_path):
    """Stages of 2 and 4 steps with log_every 50: each stage's last step still writes its losses, and the summary
    holds the last of them (both were empty before)."""
    run = tmp_path / "sparse"
    train(toy_config("train.log_every=50"), shards, run, device="cpu")
    rows = metrics(run)
    assert [(row["step"], row["stage"]) for row in rows] == [(2, "warmup"), (6, "gan")]
    assert "g_l1" in rows[0] and {"g_l1", "g_adversarial", "d_real"} <= set(rows[1])
    assert json.loads((run / "summary.json").read_text())["last_metrics"]["step"] == 6
    stopped = tmp_path / "stopped"
    train(toy_config("train.log_every=50"), shards, stopped, device="cpu", max_steps=3)  # a run cut short
    assert [row["step"] for row in metrics(stopped)] == [2, 3]


def test_checkpoints_leave_out_what_the_seed_or_a_stage_file_holds(whole, shards, tmp_path, toy):
    run = tmp_path / "run"
    train(toy_config(), shards, run, max_steps=1, device="cpu")  # in the warm-up: D is still as built
    raw = torch.load(run / "checkpoint.pt", weights_only=True)
    assert set(raw["networks"]) == {"generator"} and raw["kept"]["discriminator"][0] == checkpoints.INITIAL
    method, nets, saved = load_trained(run / "checkpoint.pt")
    torch.manual_seed(0)
    built = get_method("toy")({"width": 32}, {}).networks["discriminator"].state_dict()
    assert all(torch.equal(value, nets["discriminator"].state_dict()[key]) for key, value in built.items())
    final = torch.load(whole / "checkpoint.pt", weights_only=True)  # the GAN stage trains both: nothing left out
    assert set(final["networks"]) == {"generator", "discriminator"}


def test_a_stage_takes_its_own_batch_size(shards, toy):
    config = toy_config("train.stages.gan.batch_size=3")
    batches = _batches(config, get_method("toy"), config.stages[1], ShardDir(shards), start_node("cpu"), Position())
    assert len(next(batches)["key"]) == 3


DDP_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from avmodels.methods import METHODS
from avmodels.training.config import load_train_config
from avmodels.training.trainer import train
METHODS["toy"] = "support:Toy"
train(load_train_config("toy", {recipe!r}), {shards!r}, {out!r}, device="cpu")
"""


def test_two_gloo_ranks_agree_on_the_weights(shards, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(TOY_RECIPE.parent), recipe=str(TOY_RECIPE), shards=str(shards),
                                        out=str(tmp_path / "ddp")))
    result = __import__("subprocess").run([*torchrun(free_port()), str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
    assert len(summary["weights_sha1_per_rank"]) == 2 and len(set(summary["weights_sha1_per_rank"])) == 1
    assert metrics(tmp_path / "ddp")[-1]["samples_per_s"] > 0


def test_a_network_starts_from_a_user_file_and_pickled_objects_are_refused(shards, tmp_path, toy):
    donor = get_method("toy")({"width": 32}, {}).networks["discriminator"]  # the warm-up leaves it as it is
    torch.save({"state_dict": {f"module.{k}": v for k, v in donor.state_dict().items()}}, tmp_path / "d.pt")
    config = toy_config(f'train.init.discriminator={{ file = "{tmp_path / "d.pt"}", strip_prefix = "module." }}')
    train(config, shards, tmp_path / "run", max_steps=1, device="cpu")
    loaded = weights(tmp_path / "run")["discriminator"]
    assert all(torch.equal(loaded[k], v) for k, v in donor.state_dict().items())
    torch.save({"generator": argparse.Namespace(payload=1)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights_only=True"):
        train(toy_config(f'train.init.generator={{ file = "{tmp_path / "evil.pt"}" }}'), shards, tmp_path / "evil",
              max_steps=1, device="cpu")
    with pytest.raises(FileNotFoundError, match="train.init.generator"):
        train(toy_config('train.init.generator={ file = "nope.pt" }'), shards, tmp_path / "none", device="cpu")


def test_a_recipe_naming_an_unknown_stage_or_loss_term_is_refused_when_loaded(toy):
    with pytest.raises(RecipeError, match="'polish': toy has the stages"):
        toy_config("train.stages.gan.name=polish")
    with pytest.raises(RecipeError, match=r"stage gan: losses must weigh exactly.*unknown \['l2'\]"):
        toy_config("train.stages.gan.losses={ l1 = 1.0, adversarial = 1.0, l2 = 3.0 }")
    with pytest.raises(RecipeError, match=r"missing \['adversarial'\]"):
        toy_config("train.stages.gan.losses={ l1 = 1.0 }")
    with pytest.raises(RecipeError, match="no stage named 'gann'"):
        load_train_config("wav2pix", overrides=["train.stages.gann.steps=3"])
    with pytest.raises(RecipeError, match="only the data half"):
        parse_train_config("headgan", read_recipe("headgan")[1] | {"train": {}})


def test_clear_errors(shards, tmp_path):
    result = avmodels_here("train", "-m", "nosuch", "-d", str(shards))
    assert result.exit_code == 2 and "no recipe named 'nosuch'" in result.output
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    info = json.loads((shards / "dataset.json").read_text())
    (unlabelled / "dataset.json").write_text(json.dumps({**info, "labels": []}))
    result = avmodels_here("train", "-m", "davs", "-d", str(unlabelled), "-o", str(tmp_path / "davs"))
    assert result.exit_code == 2 and "DAVS trains on word labels and these shards have none" in result.output
    result = avmodels_here("train", "-m", "wav2pix", "-d", str(tmp_path), "-o", str(tmp_path / "none"))
    assert result.exit_code == 2 and "no dataset.json here; make shards with `avprep shard" in result.output
    result = avmodels_here("train", "-m", "wav2pix", "-d", str(shards), "-o", str(tmp_path / "none"), "--resume")
    assert result.exit_code == 2 and "no checkpoint" in result.output
    result = avmodels_here("eval", "-m", "wav2pix", "-d", str(shards), "--split", "test")
    assert result.exit_code == 2 and "the 'test' split holds no samples" in result.output


def test_a_batch_that_cannot_be_formed_is_one_line_naming_field_shapes_and_keys(tmp_path):
    """Issue 27: mixed shapes in a split ended in a torch traceback ("stack expects each tensor to be equal
    size"); now one line with the field, the shapes, the samples and the run folder, through the CLI, in the main
    process and from a loader worker."""
    from support import npy, png, write_shards

    sizes = iter([16, 16, 12, 16] * 4)
    odd = write_shards(tmp_path / "odd", "toy", {"train": [4]},
                       members=lambda rng: {"image.png": png(rng, 8), "code.npy": npy(rng.normal(size=next(sizes)))})
    for workers in ("0", "1"):
        result = avmodels_here("train", "-m", "toy", "--recipe", str(TOY_RECIPE), "-d", str(odd), "-o",
                               str(tmp_path / "run"), "--set", "train.batch_size=4", "--set",
                               f"train.num_workers={workers}")
        assert result.exit_code == 2, result.output
        message = " ".join(result.output.split())  # rich wraps long lines
        assert re.search(r"error: cannot batch field 'code': train_000\d has \[1[26]\], but train_000\d \[1[26]\]",
                         message), message
        assert "Traceback" not in result.output and f"run folder: {tmp_path / 'run'}" in message


def test_shards_at_a_url_train_as_a_local_folder_does(shards, tmp_path):
    """--data takes a shard folder's URL (issue 27): served over HTTP on 127.0.0.1 by the test, dataset.json and
    the tars are read through it; a scheme whose fsspec plugin is missing is one line naming the plugin."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shards))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        result = avmodels_here("train", "-m", "toy", "--recipe", str(TOY_RECIPE), "-d", url, "-o",
                               str(tmp_path / "remote"))  # the toy recipe's num_workers = 0: read here
        assert result.exit_code == 0, result.output
        assert checkpoints.load(tmp_path / "remote" / "checkpoint.pt")["step"] == 6
        missing = avmodels_here("train", "-m", "toy", "--recipe", str(TOY_RECIPE), "-d", url + "elsewhere/")
        assert missing.exit_code == 2 and "no dataset.json here" in missing.output
    finally:
        server.shutdown()
    plugin = avmodels_here("train", "-m", "toy", "--recipe", str(TOY_RECIPE), "-d", "s3://bucket/shards")
    assert plugin.exit_code == 2 and "Install s3fs to access S3" in " ".join(plugin.output.split())


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
    stage = load_train_config("wav2pix").stages[0]
    assert stage.total_steps(samples_per_epoch=640, batch_size=64, world_size=2) == 1000


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
    # the official HeadGAN drops the rate at each epoch's end: 0.75, 0.5, 0.25 and 0 in epochs 7-10 (review #20)
    stairs = _schedule(OptimizerSpec("g", ("x",), 1.0, schedule="linear", hold=0.6, stairs=4), lambda: progress[0])
    for epoch, expected in enumerate([1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0]):
        for within in (0.0, 0.05, 0.099):
            progress[0] = epoch / 10 + within
            assert stairs(100) == pytest.approx(expected), (epoch, within)
    with pytest.raises(RecipeError, match="0 <= hold < 1"):
        load_train_config("wav2pix", overrides=["train.stages.gan.optimizers.generator.hold=1.0"])


def test_one_pass_outputs_are_cut_back_into_real_and_fake_however_nested():
    """Under DDP a discriminator sees real and fake in one pass; HeadGAN's returns scales of layers."""
    from avmodels.losses import _halves

    both = torch.arange(6.0)
    nested = [[both, both * 2], [both * 3]]
    real, fake = _halves(nested, 4)
    assert [[t.tolist() for t in scale] for scale in real] == [[[0, 1, 2, 3], [0, 2, 4, 6]], [[0, 3, 6, 9]]]
    assert [[t.tolist() for t in scale] for scale in fake] == [[[4, 5], [8, 10]], [[12, 15]]]
    assert [t.tolist() for t in _halves((both, both), 1)[1]] == [[1, 2, 3, 4, 5]] * 2
