"""What every method must do, checked alike for each: build at its recipe's size (on the meta device) and small,
train every stage from synthetic shards in the recipe's order with pictures and stage files, come back from its
checkpoints, resume exactly from inside a later stage, and (slow) train under 2-rank gloo DDP with equal
weights on both ranks."""
from __future__ import annotations

import json
import math

import pytest
import torch
from support import QUICK, STOPS, TINY, free_port, run_avmodels, torchrun, write_shards

from avmodels import checkpoints
from avmodels.methods import METHODS, get_method, load_trained
from avmodels.training.config import load_train_config
from avmodels.training.trainer import train

BOOKKEEPING = {"step", "stage", "epoch", "samples_per_s", "data_wait"}
SHIPPED = sorted(METHODS)  # as collected: other modules' fixtures may register a toy for a while
LISTED = {"speakers": ["a", "b", "c"], "labels": ["ABOUT", "AFTER"]}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    return {name: write_shards(root / name, name) for name in SHIPPED}


def tiny(name: str):
    return load_train_config(name, overrides=[*QUICK, *TINY[name]])


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


@pytest.fixture(scope="module")
def whole(synthetic, tmp_path_factory):
    """Each method's uninterrupted TINY run, made when first asked for."""
    made = {}

    def run(name: str):
        if name not in made:
            made[name] = tmp_path_factory.mktemp(f"whole_{name}")
            train(tiny(name), synthetic[name], made[name], device="cpu")
        return made[name]

    return run


@pytest.mark.parametrize("name", SHIPPED)
def test_every_stage_trains_in_order_with_pictures_and_stage_files(name, whole):
    run, config = whole(name), tiny(name)
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
def test_comes_back_from_its_checkpoint_and_stage_files(name, whole):
    run = whole(name)
    last = tiny(name).stages[-1].name
    method, nets, saved = load_trained(run / "checkpoint.pt")
    assert method.name == name and saved["step"] == len(rows(run))
    complete = networks(run / f"stage-{last}.pt")
    for network, state in complete.items():
        assert all(torch.equal(value, nets[network].state_dict()[key]) for key, value in state.items()), network
    for stage in tiny(name).stages:
        load_trained(run / f"stage-{stage.name}.pt")  # each complete in itself


@pytest.mark.parametrize("name", SHIPPED)
def test_resumes_exactly_from_inside_a_later_stage(name, whole, synthetic, tmp_path):
    config, parts = tiny(name), tmp_path / "parts"
    train(config, synthetic[name], parts, max_steps=STOPS[name], device="cpu")
    train(config, synthetic[name], parts, resume=True, device="cpu")
    for first, second in zip(rows(whole(name)), rows(parts), strict=True):
        assert (first["step"], first["stage"], first["epoch"]) == (second["step"], second["stage"], second["epoch"])
        losses = {key: value for key, value in first.items() if key not in BOOKKEEPING}
        assert {key: second[key] for key in losses} == pytest.approx(losses, rel=1e-5, abs=1e-7), first["step"]
    resumed = networks(parts / "checkpoint.pt")
    for network, state in networks(whole(name) / "checkpoint.pt").items():
        for key, value in state.items():
            assert torch.allclose(value.float(), resumed[network][key].float(), rtol=1e-4, atol=1e-6), (network, key)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_two_gloo_ranks_train_every_stage_and_agree(name, synthetic, tmp_path):
    settings = [arg for setting in [*QUICK, *TINY[name]] for arg in ("--set", setting)]
    result = run_avmodels("train", "-m", name, "-d", str(synthetic[name]), "-o", str(tmp_path / "ddp"),
                          "--device", "cpu", *settings, wrapper=torchrun(free_port()))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == sum(stage.steps for stage in tiny(name).stages)
    assert len(set(summary["weights_sha1_per_rank"])) == 1
