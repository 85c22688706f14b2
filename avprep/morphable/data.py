"""Face tracks of an extracted video, as the model builder and the fitter read them from a prep folder."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from avprep.morphable.topology import FACE_VERTICES
from avprep.pipeline.store import PrepDir


@dataclass
class VideoTracks:
    points: np.ndarray  # (N, 468, 3) face vertices of every frame: x, y in frame pixels, depth in pixels
    iod_px: np.ndarray  # (N,) inter-ocular distance in pixels
    tracks: list[np.ndarray]  # per track, its frames that have landmarks, in time order


def read_video_tracks(video_dir: str | os.PathLike) -> VideoTracks:
    """The mesh, inter-ocular distance and track membership that ``avprep extract`` stored for one video."""
    folder = Path(video_dir)
    points = np.load(folder / "landmarks.npy", allow_pickle=False)[:, :FACE_VERTICES]
    rows = pq.read_table(folder / "frames.parquet", columns=["track", "iod_px"]).to_pydict()
    track = np.asarray(rows["track"], dtype=np.int64)
    iod = np.asarray(rows["iod_px"], dtype=np.float64)
    usable = np.isfinite(points).all(axis=(1, 2)) & (track >= 0) & (iod > 0)  # NaN compares false
    tracks = [np.flatnonzero(usable & (track == t)) for t in np.unique(track[usable])]
    return VideoTracks(points=points, iod_px=iod, tracks=tracks)


def face_videos(prep_dir: str | os.PathLike) -> list[Path]:
    """Folders of the videos extracted successfully with face analysis."""
    prep = PrepDir(prep_dir)
    folders = (prep.video_dir(r["video_id"]) for r in prep.records() if r.get("status") == "ok")
    return [folder for folder in folders if (folder / "landmarks.npy").exists()]
