"""`avmodels quickstart` for every method: demo media -> extract -> shard -> train -> sample -> eval (slow)."""
from __future__ import annotations

import json
import re

import pytest
from support import run_avmodels

from avmodels.methods import get_method


@pytest.mark.slow
@pytest.mark.parametrize("method, steps", [("wav2pix", 4), ("atvgnet", 8), ("davs", 4), ("headgan", 2),
                                           ("ear_sr", 2)])
def test_quickstart_runs_the_whole_chain(tmp_path, method, steps):
    """`avmodels quickstart`: demo media -> extract -> shard -> train -> sample -> eval, every output there."""
    result = run_avmodels("quickstart", str(tmp_path / "qs"), "--method", method, "--steps", str(steps))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    main = next(iter(get_method(method).main_measures))  # printed beside its floor and ceiling
    assert re.search(rf"{main} [-\d.na]+ \(baseline [-\d.na]+", result.stdout), result.stdout[-2000:]
    made = {"wav2pix": ("sample.png", "talking.mp4"), "ear_sr": ("sample.png", "eval-closed.json"),
            "davs": ("talking.mp4", "eval/", "driven.mp4", "demo/lipread_mp4/ABOUT/test/ABOUT_00001.mp4")}
    for path in ("eval.json", "eval.png", "run/checkpoint.pt", "run/metrics.jsonl", "shards/dataset.json",
                 *made.get(method, ("talking.mp4", "eval/"))):
        assert (tmp_path / "qs" / path).exists(), path
    if method == "headgan":  # the demo's speech heard by pocketsphinx; cross-identity videos among eval's
        assert all(json.loads(p.read_text())["transcript_source"] == "pocketsphinx"
                   for p in (tmp_path / "qs" / "prep" / "videos").glob("*/record.json"))
        assert list((tmp_path / "qs" / "eval").glob("cross-*.mp4"))
    stages = {"wav2pix": 1, "atvgnet": 2, "davs": 2, "headgan": 1, "ear_sr": 6}[method]  # DAVS: no pid_pretrain
    assert json.loads((tmp_path / "qs" / "eval.json").read_text())["step"] == steps * stages
