"""What every method must do, checked alike for each: build at its recipe's size (on the meta device) and small,
train every stage from synthetic shards in the recipe's order with pictures and stage files, come back from its
checkpoints, resume exactly from inside a later stage, and (slow) train under 2-rank gloo DDP with equal
weights on both ranks."""
from __future__ import annotations

import json
import math

import pytest
import torch
from support import QUICK, STOPS, TINY, avmodels_here, free_port, run_avmodels, tiny_config, torchrun

from avmodels import checkpoints
from avmodels.methods import METHODS, get_method, load_trained
from avmodels.training.config import load_train_config
from avmodels.training.trainer import train

BOOKKEEPING = {"step", "stage", "epoch", "samples_per_s", "data_wait"}
SHIPPED = sorted(METHODS)  # as collected: other modules' fixtures may register a toy for a while
LISTED = {"speakers": ["a", "b", "c"], "labels": ["ABOUT", "AFTER"]}


tiny = tiny_config


def rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def networks(path) -> dict:
    return checkpoints.load(path)["networks"]


@pytest.mark.parametrize("name", SHIPPED)
def test_builds_at_the_recipes_size_and_small(name):
    with torch.device("meta"):
        full = get_method(name)(load_train_config(name).model, LISTED)
    assert sum(p.numel() for net in full.networks.values() for p in net.parameters()) > 1_000_000
    small = get_method(name)(tiny(name).model, LISTED)
    assert small.networks.keys() == full.networks.keys()
    optimised = {net for stage in tiny(name).stages for optimizer in stage.optimizers for net in optimizer.networks}
    assert optimised <= set(small.networks)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_stage_trains_in_order_with_pictures_and_stage_files(name, trained_for):
    run, config = trained_for(name), tiny(name)
    expected = [stage.name for stage in config.stages for _ in range(stage.steps)]
    logged = rows(run)
    assert [row["stage"] for row in logged] == expected
    for row in logged:  # every step logs its loss terms, all finite
        terms = {key: value for key, value in row.items() if key not in BOOKKEEPING and not key.startswith("lr/")}
        assert terms and all(math.isfinite(value) for value in terms.values()), row
    assert len(list((run / "samples").glob("step-*.png"))) == len(expected)
    for stage in config.stages:
        assert (run / f"stage-{stage.name}.pt").is_file(), stage.name


@pytest.mark.parametrize("name", SHIPPED)
def test_comes_back_from_its_checkpoint_and_stage_files(name, trained_for):
    run = trained_for(name)
    last = tiny(name).stages[-1].name
    method, nets, saved = load_trained(run / "checkpoint.pt")
    assert method.name == name and saved["step"] == len(rows(run))
    complete = networks(run / f"stage-{last}.pt")
    for network, state in complete.items():
        assert all(torch.equal(value, nets[network].state_dict()[key]) for key, value in state.items()), network
    for stage in tiny(name).stages:
        load_trained(run / f"stage-{stage.name}.pt")  # each complete in itself


@pytest.mark.parametrize("name", SHIPPED)
def test_resumes_exactly_from_inside_a_later_stage(name, trained_for, synthetic_for, tmp_path):
    config, parts, whole = tiny(name), tmp_path / "parts", trained_for(name)
    train(config, synthetic_for(name), parts, max_steps=STOPS[name], device="cpu")
    train(config, synthetic_for(name), parts, resume=True, device="cpu")
    for first, second in zip(rows(whole), rows(parts), strict=True):
        assert (first["step"], first["stage"], first["epoch"]) == (second["step"], second["stage"], second["epoch"])
        losses = {key: value for key, value in first.items() if key not in BOOKKEEPING}
        assert {key: second[key] for key in losses} == pytest.approx(losses, rel=1e-5, abs=1e-7), first["step"]
    resumed = networks(parts / "checkpoint.pt")
    for network, state in networks(whole / "checkpoint.pt").items():
        for key, value in state.items():
            assert torch.allclose(value.float(), resumed[network][key].float(), rtol=1e-4, atol=1e-6), (network, key)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_two_gloo_ranks_train_every_stage_and_agree(name, synthetic_for, tmp_path):
    settings = [arg for setting in [*QUICK, *TINY[name]] for arg in ("--set", setting)]
    result = run_avmodels("train", "-m", name, "-d", str(synthetic_for(name)), "-o", str(tmp_path / "ddp"),
                          "--device", "cpu", *settings, wrapper=torchrun(free_port()))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == sum(stage.steps for stage in tiny(name).stages)
    assert len(set(summary["weights_sha1_per_rank"])) == 1


def test_list_names_methods_stages_and_recipes():
    result = avmodels_here("list")
    assert result.exit_code == 0, result.output
    assert "wav2pix" in result.output and "gan" in result.output and "200 epochs" in result.output
    assert "x0.1" in result.output  # Ear-SR fine-tunes E_a at a tenth of the fusion rate
    counts = json.loads(avmodels_here("list", "--params", "--json").output)
    assert counts["atvgnet"] == {"at_net": 30_071_750, "vg_net": 58_355_781, "discriminator": 20_896_905,
                                 "landmark_pca": 0}
    assert counts["wav2pix"]["generator"] == 13_241_344
    assert counts["davs"]["decoder"] == 22_404_547 and counts["davs"]["word_classifier"] == 1_829_876  # 500 words
    assert "--reference + --audio or --driving -> video" in result.output
