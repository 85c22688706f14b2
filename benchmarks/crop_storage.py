"""How to store the canonical face crops: bytes per frame and encode/decode time for each candidate format.

    python benchmarks/crop_storage.py [--out benchmarks/results/crop_storage.md]

Crops are cut by a real extract of a generated talking head; every format is timed on the same crops.
"""
from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _bench import publish

from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import discover
from avprep.pipeline.runner import extract_video
from avprep.synth.talking_head import make_talking_head

FORMATS = {
    "JPEG q90": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
    "JPEG q95 (default)": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
    "PNG (lossless)": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 3]),
    "WebP lossless": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
}


def crops_of(clip: Path, prep: Path) -> list[np.ndarray]:
    record = extract_video(discover([clip])[0], str(prep), ExtractConfig(), 64 << 20)
    with tarfile.open(prep / "videos" / record["video_id"] / "crops.tar") as tar:
        return [cv2.imdecode(np.frombuffer(tar.extractfile(m).read(), np.uint8), cv2.IMREAD_COLOR)
                for m in tar.getmembers()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "crop_storage.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_talking_head(clip, seconds=4.0, size=(1280, 720))
        crops = crops_of(clip, Path(tmp) / "prep")
    rows = ["| format | KiB per 256² crop | encode ms | decode ms | max abs error |", "|---|---:|---:|---:|---:|"]
    for name, (ext, params) in FORMATS.items():
        start = time.perf_counter()
        encoded = [cv2.imencode(ext, crop, params)[1] for crop in crops]
        encode_ms = (time.perf_counter() - start) / len(crops) * 1000
        start = time.perf_counter()
        decoded = [cv2.imdecode(data, cv2.IMREAD_COLOR) for data in encoded]
        decode_ms = (time.perf_counter() - start) / len(crops) * 1000
        error = max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(decoded, crops))
        kib = np.mean([len(data) for data in encoded]) / 1024
        rows.append(f"| {name} | {kib:.1f} | {encode_ms:.2f} | {decode_ms:.2f} | {error} |")
    raw_kib = crops[0].nbytes / 1024
    rows.append(f"| raw uint8 (npy) | {raw_kib:.1f} | 0 | 0 | 0 |")
    publish(rows, f"Canonical crop storage ({len(crops)} crops of a 720p talking head)", args.out)


if __name__ == "__main__":
    main()
