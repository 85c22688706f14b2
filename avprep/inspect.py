"""Contact sheets of what extract saw: frames with box and landmarks above the aligned crops."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

from avprep.face.align import apply
from avprep.media.video import decode_frames

PANEL = 256


def contact_sheet(prep: str | Path, video_id: str, n_frames: int = 8) -> np.ndarray:
    """An RGB image: for ``n_frames`` frames spread over the video, the frame (face box, 68 landmarks, time,
    track, mesh score, blur and whether it passed the quality thresholds) above its canonical crop (with the
    same landmarks mapped into it)."""
    folder = Path(prep) / "videos" / video_id
    record_path = folder / "record.json"
    if not record_path.exists():
        raise FileNotFoundError(f"no extracted video {video_id!r} in {prep}")
    record = json.loads(record_path.read_text())
    if record["status"] != "ok":
        raise ValueError(f"{video_id} failed to extract: {record['error_kind']}: {record['error']}")
    landmarks = np.load(folder / "landmarks68.npy", mmap_mode="r")
    transforms = np.load(folder / "align.npy", mmap_mode="r")
    with_face = np.flatnonzero(np.isfinite(landmarks[:, 0, 0]))
    chosen = with_face[np.linspace(0, len(with_face) - 1, min(n_frames, len(with_face))).round().astype(int)]
    frames = _frames_at(record, set(chosen.tolist()))
    rows = pq.read_table(folder / "frames.parquet").to_pydict()
    columns = []
    with tarfile.open(folder / "crops.tar") as crops:
        for index in chosen:
            points = np.asarray(landmarks[index], dtype=np.float64)
            mesh = rows["mesh_score"][index] if "mesh_score" in rows else float("nan")  # older preps lack it
            quality = (f"track {rows['track'][index]}  mesh {mesh:.2f}  blur {rows['blur'][index]:.0f}  "
                       f"{'good' if rows['good'][index] else 'flagged'}")
            top = _frame_panel(frames[index], points, [f"frame {index}  {index / record['fps']:.2f} s", quality])
            data = crops.extractfile(f"{index:06d}.jpg").read()
            crop = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            bottom = _crop_panel(crop, apply(np.asarray(transforms[index], dtype=np.float64), points))
            columns.append(np.concatenate([top, bottom], axis=0))
    return np.concatenate(columns, axis=1)


def _frames_at(record: dict, indices: set[int]) -> dict[int, np.ndarray]:
    """The decoded frames at ``indices``, streaming through the video once (only those are kept)."""
    found = {}
    for chunk in decode_frames(record["path"], width=record["width"], height=record["height"], fps=record["fps"]):
        for offset in indices & set(range(chunk.start, chunk.start + len(chunk.frames))):
            found[offset] = chunk.frames[offset - chunk.start].copy()
        if len(found) == len(indices):
            break
    return found


def _frame_panel(frame: np.ndarray, points: np.ndarray, lines: list[str]) -> np.ndarray:
    scale = PANEL / max(frame.shape[:2])
    panel = np.zeros((PANEL, PANEL, 3), np.uint8)
    small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    panel[: small.shape[0], : small.shape[1]] = small
    scaled = points * scale
    x0, y0 = scaled.min(axis=0)
    x1, y1 = scaled.max(axis=0)
    cv2.rectangle(panel, (int(x0), int(y0)), (int(x1), int(y1)), (255, 200, 0), 1)
    _draw_points(panel, scaled, radius=1)
    top = min(small.shape[0] + 16, PANEL - 6 - 14 * (len(lines) - 1))
    for k, line in enumerate(lines):
        cv2.putText(panel, line, (4, top + 14 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def _crop_panel(crop: np.ndarray, points: np.ndarray) -> np.ndarray:
    scale = PANEL / crop.shape[0]
    panel = cv2.resize(crop, (PANEL, PANEL), interpolation=cv2.INTER_AREA).copy()
    _draw_points(panel, points * scale, radius=2)
    return panel


def _draw_points(image: np.ndarray, points: np.ndarray, radius: int) -> None:
    for k, (x, y) in enumerate(points):
        colour = (0, 255, 0) if k < 48 else (255, 60, 60)  # lips in red: they carry the speech
        cv2.circle(image, (int(round(x)), int(round(y))), radius, colour, -1, cv2.LINE_AA)
