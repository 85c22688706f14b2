"""Every method on a folder of ordinary clips (issue 27): 24, 25, 29.97, 30 and 50 fps, sizes from QCIF with
non-square pixels to 720p, a rotated and a variable-rate clip, extracted without --fps, then sharded at each
recipe's rate, trained two steps and sampled (slow)."""
from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from support import QUICK, TINY, run_avmodels, run_cli, run_ffmpeg

from avprep.media.audio import decode_audio
from avprep.media.probe import probe
from avprep.shard.recipe import load_recipe
from avprep.synth.faces import IDENTITIES
from avprep.synth.talking_head import make_talking_head

WORDS = ("ABOUT", "AFTER")
CLIPS = [  # speaker, name, rate, (width, height), what else
    (0, "rate24", 24, (320, 240), None), (0, "rate50", 50, (640, 360), None),
    (1, "qcif2997", "30000/1001", (176, 144), "sar"), (1, "hd30", 30, (1280, 720), None),
    (2, "rotated25", 25, (320, 240), "rotated"), (2, "variable", 25, (320, 240), "vfr"),
]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, Path]:
    """(the clips' folder, their prep): each clip with a timed transcript and a word label (--meta)."""
    root = tmp_path_factory.mktemp("mixed")
    videos, rows = root / "videos", []
    for number, (speaker, name, rate, size, odd) in enumerate(CLIPS):
        folder = videos / IDENTITIES[speaker]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.mp4"
        made = path if odd is None else folder / f"plain_{name}.mp4"
        make_talking_head(made, identity=IDENTITIES[speaker], seconds=2.0, fps=rate, size=size, seed=number)
        if odd == "sar":  # QCIF's 12:11 pixels
            run_ffmpeg("-i", str(made), "-vf", "setsar=12/11", "-c:a", "copy", str(path))
        elif odd == "rotated":  # a phone clip: stored sideways, shown upright
            run_ffmpeg("-display_rotation", "90", "-i", str(made), "-c", "copy", str(path))
        elif odd == "vfr":  # frame times jittered by up to 12 ms around 25 fps
            run_ffmpeg("-i", str(made), "-vf", "setpts=(N/25+0.012*sin(N*1.7))/TB", "-fps_mode", "vfr",
                       "-c:a", "copy", str(path))
        if made != path:
            made.unlink()
            made.with_suffix(".truth.json").unlink(missing_ok=True)
        path.with_suffix(".transcript.json").write_text(json.dumps(
            [{"start": 0.1, "end": 0.7, "text": "hello"}, {"start": 0.9, "end": 1.8, "text": "world"}]))
        rows.append({"path": str(path), "label": WORDS[number % 2]})
    with open(root / "meta.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "label"])
        writer.writeheader()
        writer.writerows(rows)
    prep = root / "prep"
    run_cli("extract", str(videos), "-o", str(prep), "-j", "2", "--meta", str(root / "meta.csv"))
    return videos, prep


def _members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers()}


SPLITS = {"ear_sr": ["--set", "split.fractions={train_a = 0.25, train_b = 0.25, test = 0.25, test_closed = 0.25}"],
          "wav2pix": ["--set", "split.fractions={train = 0.5, test = 0.5}"]}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["wav2pix", "atvgnet", "davs", "headgan", "ear_sr"])
def test_every_method_shards_trains_and_samples_a_folder_of_mixed_rates(mixed, tmp_path, method):
    videos, prep = mixed
    records = {json.loads(p.read_text())["video_id"]: json.loads(p.read_text())
               for p in (prep / "videos").glob("*/record.json")}
    assert all(r["status"] == "ok" for r in records.values()), [r["error"] for r in records.values()]
    assert len({round(r["fps"], 2) for r in records.values()}) >= 5  # extracted at their own rates
    shards = tmp_path / "shards"
    run_cli("shard", str(prep), "-o", str(shards), "--recipe", method, *SPLITS.get(method, []))
    run_cli("validate", str(shards))  # every field's shape as dataset.json declares it
    recipe = load_recipe(method)
    shapes: dict[str, set] = {}
    for tar in shards.glob("*.tar"):
        for name, data in _members(tar).items():
            key, field = name.split(".", 1)
            if field == "meta.json":
                meta = json.loads(data)
                assert meta["fps"] == (recipe.fps or records[meta["video_id"]]["fps"])
                if "source_frames" in meta:  # each frame the video's nearest to its time
                    times = (meta["start_frame"] + np.arange(meta["n_frames"])) / meta["fps"]
                    assert np.abs(np.array(meta["source_frames"]) / meta["source_fps"] - times).max() \
                        <= 0.5 / meta["source_fps"] + 1e-9
            elif field.endswith(".npy"):
                shapes.setdefault(field, set()).add(np.load(io.BytesIO(data)).shape)
    assert all(len(found) == 1 for found in shapes.values()), shapes
    settings = [arg for setting in [*QUICK, *TINY[method]] for arg in ("--set", setting)]
    run = tmp_path / "run"
    trained = run_avmodels("train", "-m", method, "-d", str(shards), "-o", str(run), "--max-steps", "2", *settings)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    speech, face, driver = (next(videos.rglob(f"{name}.mp4")) for name in ("rate50", "rate24", "hd30"))
    given = {"wav2pix": ["--audio", str(speech), "-o", str(tmp_path / "out.png")],
             "ear_sr": ["--lr", str(face), "--audio", str(speech), "-o", str(tmp_path / "out.png")],
             "atvgnet": ["--audio", str(speech), "--reference", str(face), "-o", str(tmp_path / "out.mp4")],
             "davs": ["--driving", str(speech), "--reference", str(face), "-o", str(tmp_path / "out.mp4")],
             "headgan": ["--driving", str(driver), "--reference", str(face), "-o", str(tmp_path / "out.mp4")]}
    sampled = run_avmodels("sample", "-c", str(run / "checkpoint.pt"), *given[method])
    assert sampled.returncode == 0, sampled.stdout[-2000:] + sampled.stderr[-2000:]
    out = Path(given[method][-1])
    if out.suffix == ".mp4":  # at the model's rate, as long as the speech it says
        made, heard = probe(out), len(decode_audio(out, 1)) / 16000
        spoken = len(decode_audio(driver if method == "headgan" else speech, 1)) / 16000
        assert abs(made.fps - 25) < 0.01 and abs(made.n_packets / made.fps - spoken) <= 1 / 25 + 1e-6
        assert abs(heard - spoken) <= 1 / 25 + 1e-6
    else:
        assert out.stat().st_size > 0
