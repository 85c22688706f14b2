"""avmodels.data on tiny shards written here with tarfile, in exactly the format ``avprep shard`` writes."""
from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
from support import clip, flac, jpg, npy, png, write_shards, write_tar

from avmodels.data import (
    ARENAS_PER_WORKER,
    Prefetcher,
    UnsafeMemberError,
    make_dataset,
    make_loader,
    node_position,
    shard_urls,
)
from avmodels.methods import get_method
from avmodels.views import EncodedImages
from avprep.shard.tars import shard_samples

T = 2  # frames per clip: small, the views do not care
ATVGNET_CLIP = 24  # ATVGnet draws an example frame in [3, 7] and the 16 frames after it
DAVS_CLIP = 25  # DAVS classifies every other frame of 24 and reads 20 consecutive ones (small images: cheap tars)
SAMPLES_PER_SHARD = {"train": [3, 3, 3, 3, 3, 2], "val": [2, 2]}


MEMBERS = {  # method -> (rng -> members after meta.json, frames per sample)
    "wav2pix": (lambda rng: {"image.jpg": jpg(rng, 128), "audio.flac": flac(rng, 1.5),
                             "wrong.jpg": jpg(rng, 128)}, 1),
    "atvgnet": (lambda rng: {**clip(rng, "f", "jpg", 128, ATVGNET_CLIP),
                             "landmarks.npy": npy(rng.uniform(0, 128, (ATVGNET_CLIP, 68, 2))),
                             "mfcc.npy": npy(rng.normal(size=(ATVGNET_CLIP, 28, 12)))}, ATVGNET_CLIP),
    "davs": (lambda rng: {**clip(rng, "f", "jpg", 32, DAVS_CLIP),
                          "mfcc.npy": npy(rng.normal(size=(DAVS_CLIP, 20, 12)))}, DAVS_CLIP),
    "headgan": (lambda rng: {**clip(rng, "f", "jpg", 256, T), **clip(rng, "nmfc", "png", 256, T),
                             "ref.jpg": jpg(rng, 256), "audio_features.npy": npy(rng.normal(size=(T, 300)))}, T),
    "ear_sr": (lambda rng: {"image.jpg": jpg(rng, 128), "lr.png": png(rng, 8), "audio.flac": flac(rng, 4.0)}, 1),
}

SHAPES = {  # view key -> (dtype, shape of one sample)
    "wav2pix": {"image": (torch.uint8, (3, 128, 128)), "wrong": (torch.uint8, (3, 128, 128)),
                "audio": (torch.float32, (16000,))},
    "atvgnet": {"frames": (torch.uint8, (16, 3, 128, 128)), "reference": (torch.uint8, (3, 128, 128)),
                "landmarks": (torch.float32, (16, 68, 2)), "example_landmarks": (torch.float32, (68, 2)),
                "mfcc": (torch.float32, (16, 28, 12))},
    "davs": {"frames": (torch.uint8, (DAVS_CLIP, 3, 32, 32)), "mfcc": (torch.float32, (DAVS_CLIP, 20, 12)),
             "label": (torch.int64, ()), "classified": (torch.int64, (12,)), "generated": (torch.int64, ()),
             "identity_start": (torch.int64, ()), "reference_index": (torch.int64, ())},
    "headgan": {"frames": (torch.uint8, (T, 3, 256, 256)), "nmfc": (torch.uint8, (T, 3, 256, 256)),
                "reference": (torch.uint8, (3, 256, 256)), "audio_features": (torch.float32, (T, 300))},
    "ear_sr": {"hr": (torch.uint8, (3, 128, 128)), "lr": (torch.uint8, (3, 8, 8)),
               "spectrogram": (torch.float32, (1, 257, 257))},
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loader_shards")
    return {method: write_shards(root / method, method, SAMPLES_PER_SHARD, members=members, frames=frames)
            for method, (members, frames) in MEMBERS.items()}


def split_keys(folder: Path, split: str) -> list[str]:
    table = pq.read_table(folder / "index.parquet").to_pylist()
    return [row["key"] for row in table if row["split"] == split]


def loaded_keys(loader) -> list[str]:
    return [key for batch in loader for key in batch["key"]]


@pytest.mark.parametrize("method", list(MEMBERS))
def test_views_have_the_documented_shapes(shards, method):
    dataset = make_dataset(shard_urls(shards[method], "val"), get_method(method).view, train=False)
    batch = next(iter(make_loader(dataset, batch_size=2, num_workers=0)))
    for key, (dtype, shape) in SHAPES[method].items():
        assert batch[key].dtype == dtype and tuple(batch[key].shape) == (2, *shape), key
    assert batch["speaker"].dtype == torch.int64 and len(batch["key"]) == 2
    texts = {"gender", "age"} if method == "ear_sr" else set()  # Ear-SR's attributes, "" without a --meta CSV
    assert set(batch) == {*SHAPES[method], "speaker", "key", *texts}
    assert all(batch[name] == ["", ""] for name in texts)


@pytest.mark.parametrize("method", list(MEMBERS))
def test_worker_batches_equal_in_process_batches_and_images_read_as_cv2_reads_them(shards, method):
    """In workers the batch is packed into a recycled shared arena, images decoded straight into it."""
    urls = shard_urls(shards[method], "val")

    def batches(workers):
        dataset = make_dataset(urls, get_method(method).view, train=False)
        return list(make_loader(dataset, batch_size=3, num_workers=workers))

    in_process, in_worker = batches(0), batches(1)
    assert [len(batch["key"]) for batch in in_worker] == [3, 1]  # the last batch is partial
    for expected, batch in zip(in_process, in_worker, strict=True):
        assert list(batch) == list(expected) and batch["key"] == expected["key"]
        for key in SHAPES[method]:
            assert batch[key].dtype == expected[key].dtype and torch.equal(batch[key], expected[key]), key
    sample = next(iter(wds.WebDataset(urls[0], shardshuffle=False)))
    image_key, member = {"wav2pix": ("image", "image.jpg"), "atvgnet": ("frames", "f005.jpg"),  # example 3: f004..
                         "davs": ("frames", "f001.jpg"), "headgan": ("nmfc", "nmfc001.png"),
                         "ear_sr": ("lr", "lr.png")}[method]
    image = in_worker[0][image_key][0]
    image = image[1] if image.dim() == 4 else image
    bgr = cv2.imdecode(np.frombuffer(sample[member], np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(image.numpy(), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1))


def test_batches_a_consumer_keeps_are_not_overwritten(shards):
    """More batches held than a worker has arenas: it must take fresh memory, not reuse theirs."""
    urls = shard_urls(shards["headgan"], "train")
    view = get_method("headgan").view
    reference = list(make_loader(make_dataset(urls, view, train=False), batch_size=1, num_workers=0))
    loader = make_loader(make_dataset(urls, get_method("headgan").view, train=False), batch_size=1, num_workers=1)
    for _ in range(2):
        kept = list(loader)
        assert len(kept) == len(reference) > 2 * ARENAS_PER_WORKER
        for expected, batch in zip(reference, kept):
            assert all(torch.equal(batch[key], expected[key]) for key in SHAPES["headgan"])
        del kept
    frames = [batch["frames"] for batch in loader]  # views outlive their batches too
    assert all(torch.equal(got, expected["frames"]) for got, expected in zip(frames, reference, strict=True))


@pytest.mark.parametrize("tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_member_names_keep_their_keys_in_every_tar_format(tmp_path, tar_format):
    key = "speaker_" + "s" * 70 + "/clip_" + "c" * 70
    members = {"meta.json": json.dumps({"speaker_index": 1}).encode(),
               **MEMBERS["wav2pix"][0](np.random.default_rng(0))}
    with tarfile.open(tmp_path / "long.tar", "w", format=tar_format) as tar:
        tar.addfile(tarfile.TarInfo("speaker_dir"), io.BytesIO(b""))  # a member without an extension is skipped
        for field, data in members.items():
            info = tarfile.TarInfo(f"{key}.{field}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    [sample] = list(make_dataset(str(tmp_path / "long.tar"), get_method("wav2pix").view, train=False))
    assert sample["key"] == key and tuple(sample["image"].shape) == (3, 128, 128)


def test_a_pipe_url_reads_what_the_path_reads(shards):
    shard = shard_urls(shards["davs"], "val")[0]
    via_path, via_pipe = (list(make_dataset(url, get_method("davs").view, train=False))
                          for url in (shard, f"pipe:cat {shard}"))
    assert [sample["key"] for sample in via_pipe] == [sample["key"] for sample in via_path]
    assert torch.equal(via_pipe[-1]["frames"], via_path[-1]["frames"])


def test_fsspec_urls_read_what_the_path_reads(shards):
    import fsspec

    shard = shard_urls(shards["davs"], "val")[0]
    with fsspec.open("memory://avmodels-test/val.tar", "wb") as remote:
        remote.write(Path(shard).read_bytes())
    via_path = list(make_dataset(shard, get_method("davs").view, train=False))
    for url in ("memory://avmodels-test/val.tar", "file://" + shard):
        samples = list(make_dataset(url, get_method("davs").view, train=False))
        assert [s["key"] for s in samples] == [s["key"] for s in via_path]
        assert torch.equal(samples[-1]["frames"], via_path[-1]["frames"])


def test_truncated_and_foreign_files_give_their_whole_samples_and_are_counted(shards, tmp_path, capfd):
    """A shard cut short yields the samples before the cut; an empty or foreign file yields none; each says so."""
    url = shard_urls(shards["davs"], "val")[0]
    data = Path(url).read_bytes()
    whole = [sample["__key__"] for sample in shard_samples(url)]
    for name, content, message in [("cut.tar", data[:len(data) // 2], "truncated"), ("empty.tar", b"", "empty"),
                                   ("text.tar", b"not a tar\n" * 100, "not a tar")]:
        (tmp_path / name).write_bytes(content)
        dataset = make_dataset(str(tmp_path / name), get_method("davs").view, train=False)
        keys = [sample["key"] for sample in dataset]
        assert keys == whole[:len(keys)] and (len(keys) > 0) == (name == "cut.tar") and len(keys) < len(whole)
        assert dataset.skipped == 1 and message in capfd.readouterr().err


def test_wav2pix_audio_is_a_peak_normalised_pre_emphasised_second(shards):
    urls = shard_urls(shards["wav2pix"], "val")
    crops = [next(iter(make_dataset(urls, get_method("wav2pix").view, seed=seed, shuffle_buffer=0)))["audio"]
             for seed in (0, 1)]
    centre = next(iter(make_dataset(urls, get_method("wav2pix").view, train=False)))["audio"]
    assert not torch.equal(crops[0], crops[1])  # random, seeded training crops
    assert 1.0 < centre.abs().max() <= 1.95  # x / max|x|, then x[n] - 0.95 x[n - 1]


def test_two_ranks_with_two_workers_each_cover_the_split_once(shards):
    urls = shard_urls(shards["wav2pix"], "train")
    seen = [loaded_keys(make_loader(make_dataset(urls, get_method("wav2pix").view, seed=3, rank=rank, world_size=2),
                                    batch_size=2, num_workers=2)) for rank in (0, 1)]
    assert not set(seen[0]) & set(seen[1]) and seen[0] and seen[1]
    assert sorted(seen[0] + seen[1]) == sorted(split_keys(shards["wav2pix"], "train"))


def test_every_rank_reads_the_whole_split_for_evaluation_and_fitted_statistics(shards):
    """What ``split_batches`` reads (evaluation, a landmark PCA fitted before training) must not depend on the rank:
    a rank's share differs between ranks, and is empty when there are fewer shards than ranks."""
    urls = shard_urls(shards["wav2pix"], "train")
    view = get_method("wav2pix").view
    shares = [[s["key"] for s in make_dataset(urls, view, rank=rank, world_size=8, train=False)] for rank in (0, 7)]
    assert shares[0] and not shares[1]  # 6 shards, 8 ranks
    whole = [[s["key"] for s in make_dataset(urls, view, rank=rank, world_size=8, train=False, whole=True)]
             for rank in (0, 7)]
    assert whole[0] == whole[1] == split_keys(shards["wav2pix"], "train")


def test_an_initialised_process_group_decides_the_rank(tmp_path):
    assert node_position() == (0, 1) and node_position(1, 2) == (1, 2)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                                         world_size=1)
    try:
        assert node_position() == node_position(0, 1) == (0, 1)
        with pytest.raises(ValueError, match="torch.distributed says 0 of 1"):
            node_position(1, 2)
    finally:
        torch.distributed.destroy_process_group()


def test_resampled_mode_gives_every_rank_exactly_epoch_samples(shards):
    urls = shard_urls(shards["wav2pix"], "train")
    for rank in (0, 1):
        loader = make_loader(make_dataset(urls, get_method("wav2pix").view, resampled=True, epoch_samples=7, rank=rank,
                                          world_size=2), batch_size=3, num_workers=2)
        assert [len(loaded_keys(loader)) for _ in range(2)] == [7, 7]


def test_the_order_is_a_function_of_the_seed(shards):
    urls = shard_urls(shards["wav2pix"], "train")

    def order(seed):
        return [sample["key"] for sample in make_dataset(urls, get_method("wav2pix").view, seed=seed, shuffle_buffer=4)]

    assert order(1) == order(1) != order(2)
    assert sorted(order(1)) == sorted(order(2))
    dataset = make_dataset(urls, get_method("wav2pix").view, seed=1, shuffle_buffer=4)
    assert [s["key"] for s in dataset] != [s["key"] for s in dataset]  # the next epoch reshuffles


@pytest.mark.parametrize("member", ["x.pyd", "x.pickle"])
def test_pickle_members_are_refused(tmp_path, member):
    key, field = member.split(".", 1)
    write_tar(tmp_path / "bad.tar", [(key, {"meta.json": b"{}", field: b"\x80\x04N."})])
    with pytest.raises(UnsafeMemberError, match=rf"{member} is \.{field}, a pickle: refused"):
        list(make_dataset(str(tmp_path / "bad.tar"), get_method("wav2pix").view))


def test_folders_brace_patterns_lists_and_urls_resolve(shards):
    folder = shards["wav2pix"]
    expected = [str(folder / f"train-{n:06d}.tar") for n in range(len(SAMPLES_PER_SHARD["train"]))]
    assert shard_urls(folder, "train") == expected
    assert shard_urls(f"{folder}/train-{{000000..000005}}.tar") == expected
    assert shard_urls(expected) == expected
    assert shard_urls("pipe:cat a.tar") == ["pipe:cat a.tar"]
    assert shard_urls("s3://bucket/val-{000000..000001}.tar") == ["s3://bucket/val-000000.tar",
                                                                  "s3://bucket/val-000001.tar"]
    with pytest.raises(ValueError, match="choose a split"):
        shard_urls(folder)
    keys = [sample["key"] for sample in make_dataset(f"{folder}/val-{{000000..000001}}.tar", get_method("wav2pix").view,
                                                      train=False)]
    assert keys == split_keys(folder, "val")


def test_plain_tar_and_plain_webdataset_read_the_shards(shards):
    shard, keys = shard_urls(shards["headgan"], "val")[0], split_keys(shards["headgan"], "val")[:2]
    names = subprocess.run(["tar", "tf", shard], capture_output=True, text=True, check=True).stdout.split()
    assert names[:3] == [f"{keys[0]}.meta.json", f"{keys[0]}.f000.jpg", f"{keys[0]}.f001.jpg"]
    samples = list(wds.WebDataset(shard, shardshuffle=False))
    assert [s["__key__"] for s in samples] == keys
    assert {"meta.json", "nmfc001.png", "ref.jpg", "audio_features.npy"} <= set(samples[0])


def test_the_prefetcher_on_cpu_gives_images_in_unit_range(shards):
    dataset = make_dataset(shard_urls(shards["headgan"], "val"), get_method("headgan").view, train=False)
    batch = next(iter(Prefetcher(make_loader(dataset, batch_size=2, num_workers=1), "cpu")))
    raw = next(iter(make_loader(dataset, batch_size=2, num_workers=1)))
    for key in ("frames", "nmfc", "reference"):
        assert batch[key].dtype == torch.float32 and -1.0 <= batch[key].min() < batch[key].max() <= 1.0
        assert batch[key].is_contiguous() and not raw[key].is_contiguous()  # from a worker: uint8 channels-last
        assert torch.allclose(batch[key], raw[key].float() / 127.5 - 1.0)
    assert batch["audio_features"].dtype == torch.float32 and batch["speaker"].dtype == torch.int64


def test_a_clip_with_images_of_two_sizes_or_undecodable_bytes_is_refused():
    small, large = (cv2.imencode(".jpg", np.full((h, w, 3), 90, np.uint8))[1].tobytes() for h, w in ((8, 8), (8, 16)))
    assert tuple(EncodedImages([small, small], single=False).decode().shape) == (2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"images of sizes \[\(8, 8\), \(8, 16\)\] in one clip"):
        EncodedImages([small, large], single=False)  # read from the headers as the view makes it
    with pytest.raises(ValueError, match="not a decodable"):
        EncodedImages([b"GIF89a" + bytes(40)], single=True).decode()
    with pytest.raises(ValueError, match="not a decodable"):
        EncodedImages([small[:30]], single=True).decode()


# Damaged shards: each damaged sample costs only itself (issue 27).

def _flipped(data: bytes, start: int, count: int) -> bytes:
    return data[:start] + bytes(255 - b for b in data[start:start + count]) + data[start + count:]


def _damage(folder: Path) -> dict[str, str]:
    """Damage the first train tar's samples one member each (JPEG header, FLAC, JSON, an NPY member) and cut the
    second tar inside its last sample; the keys damaged, with what."""
    first, second = sorted(folder.glob("train-*.tar"))
    with tarfile.open(first) as tar:
        samples: dict[str, dict[str, bytes]] = {}
        for member in tar.getmembers():
            key, field = member.name.split(".", 1)
            samples.setdefault(key, {})[field] = tar.extractfile(member).read()
    keys = list(samples)
    samples[keys[0]]["image.jpg"] = _flipped(samples[keys[0]]["image.jpg"], 2, 60)
    samples[keys[1]]["audio.flac"] = samples[keys[1]]["audio.flac"][:200]
    samples[keys[2]]["meta.json"] = b'{"fps": 25.0, "n_fr'
    samples[keys[3]]["extra.npy"] = npy(np.zeros(3))[:60]
    write_tar(first, list(samples.items()))
    with tarfile.open(second) as tar:
        last = tar.getmembers()[-1]
    second.write_bytes(second.read_bytes()[:last.offset_data + last.size // 2])  # inside the last member
    return {keys[0]: "JPEG", keys[1]: "FLAC", keys[2]: "JSON", keys[3]: "NPY"}


def test_a_damaged_sample_is_skipped_and_its_place_taken_by_its_neighbour(tmp_path, capfd):
    """In the main process (no workers): each damaged sample once, replaced by the sample before it (or, first,
    the next), so the pass keeps its length; the tar cut short gives its whole samples."""
    folder = write_shards(tmp_path / "shards", "wav2pix", {"train": [5, 3]})
    damaged = _damage(folder)
    dataset = make_dataset(shard_urls(folder, "train"), get_method("wav2pix").view, train=False)
    keys = [sample["key"] for sample in dataset]
    assert keys == ["train_0004"] * 5 + ["train_0005", "train_0006"]  # the 4 damaged ones replaced by the 5th
    warned = capfd.readouterr().err
    assert dataset.skipped == 5 and all(f" {key}: " in warned for key in damaged)


@pytest.mark.slow  # two training runs in subprocesses; the loader-level tests above are in the default run
def test_a_damaged_sample_costs_only_itself_and_says_which(tmp_path):
    """A flipped JPEG header, a cut FLAC, broken JSON and NPY members and a tar cut short: training goes on, each
    damaged sample named in one warning, counted in the summary; past train.max_bad_samples it stops, saying so.
    In a subprocess with a loader worker, whose warnings reach stderr."""
    from support import run_avmodels

    folder = write_shards(tmp_path / "shards", "wav2pix", {"train": [5, 3]})
    damaged = _damage(folder)
    settings = ["model.image_size=64", "train.batch_size=2", "train.stages.gan.steps=10", "train.log_every=5",
                "train.num_workers=1", "train.shuffle_buffer=1"]
    result = run_avmodels("train", "-m", "wav2pix", "-d", str(folder), "-o", str(tmp_path / "run"),
                          *[arg for setting in settings for arg in ("--set", setting)])
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped a damaged sample")]
    assert {key for key in damaged if any(f" {key}: " in line for line in warnings)} == set(damaged), warnings
    assert any("train-000001.tar (the rest of the shard): truncated" in line for line in warnings), warnings
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["damaged_samples_skipped"] >= len(damaged) + 1
    assert summary["last_metrics"]["damaged_samples"] == summary["damaged_samples_skipped"]
    strict = run_avmodels("train", "-m", "wav2pix", "-d", str(folder), "-o", str(tmp_path / "strict"),
                          *[arg for setting in [*settings, "train.max_bad_samples=1"] for arg in ("--set", setting)])
    assert strict.returncode == 2 and "more than train.max_bad_samples = 1" in " ".join(strict.stdout.split())


def test_a_png_that_will_not_decode_is_replaced_in_its_batch_by_the_worker(tmp_path):
    """With images decoded in the worker's collate, a PNG whose header reads but whose pixels do not is replaced
    by the sample before it (the batch keeps its size) and counted."""
    rng = np.random.default_rng(0)
    good = [png(rng, 8) for _ in range(4)]
    broken = good[0][:40] + bytes(255 - b for b in good[0][40:])  # the header intact: the pixels are not
    images = [good[1], broken, *good[2:]]
    write_tar(tmp_path / "t.tar", [(f"s{i}", {"image.png": data}) for i, data in enumerate(images)])

    def view(sample, rng):
        from avmodels import views
        return {"key": sample["__key__"], "image": views.image(sample["image.png"])}

    dataset = make_dataset([str(tmp_path / "t.tar")], view, train=False)
    batches = list(make_loader(dataset, batch_size=4, num_workers=1))
    assert [batch["key"] for batch in batches] == [["s0", "s0", "s2", "s3"]]
    assert torch.equal(batches[0]["image"][0], batches[0]["image"][1]) and dataset.skipped == 1
