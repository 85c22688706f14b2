"""Datasets as they lie on disk: LRW, GRID, VoxCeleb and HDTF layouts, metadata attributes, the dataset's splits."""
from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from support import WORDS, run_cli

from avprep.features.asr import DEFAULT_ALPHABET
from avprep.pipeline.inputs import InputError, discover
from avprep.pipeline.store import PrepDir
from avprep.shard.plan import plan_samples
from avprep.shard.recipe import RecipeError, load_recipe, parse_recipe, read_recipe
from avprep.shard.run import run_shard
from avprep.synth.catalogue import make_lrw_demo


@pytest.fixture(scope="session")
def grid_prep(trees, tmp_path_factory) -> Path:
    prep = tmp_path_factory.mktemp("grid_prep")
    run_cli("extract", str(trees["grid"]), "-o", str(prep), "-j", "2")
    return prep


def test_each_layout_is_recognised_and_fills_speaker_label_split_and_side_files(trees):
    lrw = {Path(s.path).stem: s for s in discover([trees["lrw"]])}
    about = lrw["ABOUT_00002"]
    assert (about.speaker, about.label, about.dataset_split) == (None, "ABOUT", "val")  # LRW has no speaker ids
    assert about.transcript.endswith("ABOUT_00002.txt")
    grid = {s.video_id: s for s in discover([trees["grid"]])}
    assert {(s.speaker, s.label) for s in grid.values()} == {("s1", "bbaf2n"), ("s1", "lgaz8p"), ("s2", "bbaf3s")}
    assert all(s.transcript.endswith(f"{s.speaker}/align/{s.label}.align") for s in grid.values())
    assert {s.speaker for s in discover([trees["voxceleb"]])} == {"id00012", "id00015"}
    assert {s.speaker for s in discover([trees["hdtf"]])} == {"WDA_BarackObama", "RD_Radio11"}
    assert {s.speaker for s in discover([trees["voxceleb"]], layout="flat")} == {None}
    with pytest.raises(InputError, match="not an LRW path"):
        discover([trees["voxceleb"]], layout="lrw")


def test_the_manifest_has_labels_and_the_datasets_own_splits(lrw_prep, grid_prep):
    rows = {r["video_id"]: r for prep in (lrw_prep, grid_prep)
            for r in pq.read_table(prep / "manifest.parquet").to_pylist()}
    assert all(r["status"] == "ok" for r in rows.values()), [r["error"] for r in rows.values()]
    assert rows["ABOUT-test-ABOUT_00003"]["label"] == "ABOUT"
    assert rows["ABOUT-test-ABOUT_00003"]["dataset_split"] == "test"
    assert rows["ABOUT-test-ABOUT_00003"]["speaker"] is None
    assert (rows["s2-video-bbaf3s"]["speaker"], rows["s2-video-bbaf3s"]["label"]) == ("s2", "bbaf3s")


def lrw_recipe(**data) -> object:
    """DAVS's recipe as one would set it for LRW: the dataset's own splits and the centred window."""
    name, document = read_recipe("davs")
    document["data"].update(window="centre", **data)
    document["split"] = {"by": "dataset"}
    return parse_recipe("davs-lrw", document)


def test_an_lrw_tree_shards_by_its_folders_with_word_labels_and_the_centred_window(lrw_prep, tmp_path):
    run_shard(lrw_prep, tmp_path, lrw_recipe())
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    assert dataset["labels"] == list(WORDS)
    index = pq.read_table(tmp_path / "index.parquet").to_pylist()
    lrw_rows = [r for r in index if r["label"] in WORDS]
    assert len(lrw_rows) == 6 and {r["split"] for r in lrw_rows} == {"train", "val", "test"}
    assert all(r["video_id"].split("-")[1] == r["split"] for r in lrw_rows)  # the folder is the split
    assert all(r["start_frame"] == (50 - 25) // 2 for r in lrw_rows)  # 25 frames in the middle of 50
    with tarfile.open(tmp_path / next(r["shard"] for r in lrw_rows if r["split"] == "val")) as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith("meta.json")]
    assert all(dataset["labels"][m["label_index"]] == m["label"] for m in metas)


def test_the_dataset_split_refuses_videos_without_one(grid_prep):
    with pytest.raises(RecipeError, match="--layout lrw"):  # GRID has no splits of its own
        plan_samples(grid_prep, lrw_recipe())


def test_a_window_offset_moves_the_centred_window(lrw_prep):
    samples, _, _ = plan_samples(lrw_prep, lrw_recipe(window_offset=-3))
    assert {s.start_frame for s in samples} == {12 - 3}


def test_grid_align_files_become_character_features_the_headgan_recipe_accepts(grid_prep, tmp_path):
    record = PrepDir(grid_prep).read_record("s1-video-bbaf2n")
    assert record["transcript_file"].endswith("bbaf2n.align")
    classes = np.load(grid_prep / "videos" / record["video_id"] / "transcript.npy").argmax(axis=1)
    at = lambda seconds: DEFAULT_ALPHABET[classes[int(seconds * record["fps"])]]
    assert (at(0.2), at(0.5), at(0.85), at(1.25), at(1.9)) == (DEFAULT_ALPHABET[0], "b", "b", "n", "w")
    summary = run_shard(grid_prep, tmp_path, load_recipe("headgan"), max_count=4)
    assert sum(summary.samples.values()) > 0


def test_metadata_columns_travel_to_the_manifest_samples_index_and_vocabularies(trees, grid_prep, tmp_path):
    meta = tmp_path / "meta.csv"  # s2's clip is not listed: its attributes are missing, not guessed
    meta.write_text("video_id,gender,age\ns1-video-bbaf2n,f,34\ns1-video-lgaz8p,m,\n")
    again = run_cli("extract", str(trees["grid"]), "-o", str(grid_prep), "--meta", str(meta))
    assert re.search(r"skipped \(already done\)\s*│\s*3 ", again.stderr)  # records rewritten, videos not redone
    rows = {r["video_id"]: r for r in pq.read_table(grid_prep / "manifest.parquet").to_pylist()}
    assert (rows["s1-video-bbaf2n"]["gender"], rows["s1-video-bbaf2n"]["age"]) == ("f", 34)
    assert rows["s1-video-lgaz8p"]["age"] is None and rows["s2-video-bbaf3s"]["gender"] is None
    recipe = parse_recipe("grid", {**read_recipe("atvgnet")[1], "split": {"by": "video",
                                                                         "fractions": {"train": 1.0}}})
    run_shard(grid_prep, tmp_path / "shards", recipe)
    dataset = json.loads((tmp_path / "shards" / "dataset.json").read_text())
    assert dataset["attributes"] == {"age": [34], "gender": ["f", "m"]}
    index = pq.read_table(tmp_path / "shards" / "index.parquet").to_pylist()
    assert {(r["video_id"], r["gender"], r["age"]) for r in index} == {
        ("s1-video-bbaf2n", "f", 34), ("s1-video-lgaz8p", "m", None), ("s2-video-bbaf3s", None, None)}
    with tarfile.open(tmp_path / "shards" / index[0]["shard"]) as tar:
        meta_json = json.loads(tar.extractfile(f"{index[0]['key']}.meta.json").read())
    assert {"gender", "age", "label", "label_index"} <= meta_json.keys()


def test_a_speaker_plus_video_split_holds_out_speakers_and_videos_of_training_speakers(prep):
    name, document = read_recipe("wav2pix")
    document["split"] = {"by": "speaker+video", "fractions": {"train": 0.6, "test_open": 0.2, "test_closed": 0.2}}
    samples, _, _ = plan_samples(prep, parse_recipe(name, document))
    speakers = {split: {s.speaker for s in samples if s.split == split} for split in ("train", "test_open",
                                                                                       "test_closed")}
    videos = {split: {s.video_id for s in samples if s.split == split} for split in speakers}
    assert all(speakers.values()) and not speakers["test_open"] & speakers["train"]
    assert speakers["test_closed"] <= speakers["train"] and not videos["test_closed"] & videos["train"]


def test_speaker_halves_each_give_videos_to_the_closed_set(prep):
    """Ear-SR's recipe: two speaker-disjoint training halves, an open test of unseen speakers, and a closed test
    of held-out videos of the halves' speakers."""
    name, document = read_recipe("ear_sr")  # the corpus: 3 speakers of two 2-second videos
    document["data"]["audio_s"] = 1.0
    document["split"]["fractions"] = {"train_a": 0.3, "train_b": 0.3, "test": 0.2, "test_closed": 0.2}
    samples, _, _ = plan_samples(prep, parse_recipe(name, document))
    speakers = {split: {s.speaker for s in samples if s.split == split} for split in ("train_a", "train_b", "test",
                                                                                       "test_closed")}
    videos = {split: {s.video_id for s in samples if s.split == split} for split in speakers}
    assert all(speakers.values()) and not speakers["train_a"] & speakers["train_b"]
    assert not speakers["test"] & (speakers["train_a"] | speakers["train_b"])
    assert speakers["test_closed"] <= speakers["train_a"] | speakers["train_b"]
    assert speakers["test_closed"] & speakers["train_a"] and speakers["test_closed"] & speakers["train_b"]
    assert not videos["test_closed"] & (videos["train_a"] | videos["train_b"])
    with pytest.raises(RecipeError, match="needs a training split"):
        parse_recipe("x", {"data": {"fields": ["frames"]}, "split": {"by": "speaker+video", "fractions": {
            "fit": 0.8, "test_closed": 0.2}}})


def test_shard_overrides_recipe_values_from_the_command_line(lrw_prep, tmp_path):
    """`avprep shard --set`: LRW's own splits and the centred window without writing a recipe file."""
    run_cli("shard", str(lrw_prep), "-o", str(tmp_path), "--recipe", "davs", "--set", "split.by=dataset",
            "--set", "data.window=centre")
    rows = pq.read_table(tmp_path / "index.parquet").to_pylist()
    assert all(r["video_id"].split("-")[1] == r["split"] for r in rows) and {r["start_frame"] for r in rows} == {12}
    wrong = run_cli("shard", str(lrw_prep), "-o", str(tmp_path / "x"), "--recipe", "davs", "--set", "split.by=word",
                    check=False)
    assert wrong.returncode == 1 and "split.by must be one of" in wrong.stderr


def test_the_lrw_shaped_demo_tree_has_words_splits_and_one_utterance_per_word(tmp_path):
    paths = make_lrw_demo(tmp_path, words=2, speakers=3, seconds=1.16)
    facts = {Path(s.path).relative_to(tmp_path).as_posix(): s for s in discover([tmp_path])}
    assert len(facts) == 6 and {(s.label, s.dataset_split) for s in facts.values()} == {
        (word, split) for word in ("ABOUT", "AFTER") for split in ("train", "val", "test")}
    truths = [json.loads(p.with_suffix(".truth.json").read_text()) for p in paths]
    assert [t["seed"] for t in truths] == [0, 0, 0, 1, 1, 1] and len({t["identity"] for t in truths}) == 3
    assert all(abs(t["seconds"] - 1.16) < 0.02 for t in truths)
