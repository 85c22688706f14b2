"""The prep folder: per-video folders that appear complete or not at all, and the manifest rebuilt from them.

    prep/videos/<video_id>/record.json   written last inside a temporary folder, which is then renamed here
    prep/videos/<video_id>/audio.flac    ... and whatever the stages wrote
    prep/.partial/                       temporary folders; anything left here by a killed run is deleted
    prep/manifest.parquet                one row per video, rebuilt from the records
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

RECORD = "record.json"

# Base manifest columns and their types; stage fields follow, typed from their values.
MANIFEST_SCHEMA = [
    ("video_id", pa.string()), ("path", pa.string()), ("speaker", pa.string()), ("label", pa.string()),
    ("dataset_split", pa.string()),
    ("status", pa.string()), ("error_kind", pa.string()), ("error", pa.string()),
    ("duration_s", pa.float64()), ("fps", pa.float64()), ("source_fps", pa.float64()),
    ("variable_fps", pa.bool_()), ("width", pa.int32()), ("height", pa.int32()), ("rotation", pa.int32()),
    ("video_codec", pa.string()), ("n_frames", pa.int64()), ("video_duration_s", pa.float64()),
    ("audio_sr", pa.int32()), ("audio_channels", pa.int32()), ("audio_duration_s", pa.float64()),
    ("av_duration_mismatch_s", pa.float64()), ("av_duration_mismatch", pa.bool_()),
    ("config_hash", pa.string()),
]


class PrepDir:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.videos = self.root / "videos"
        self.partial = self.root / ".partial"
        self.manifest_path = self.root / "manifest.parquet"

    def video_dir(self, video_id: str) -> Path:
        return self.videos / video_id

    def read_record(self, video_id: str) -> dict | None:
        try:
            return json.loads((self.video_dir(video_id) / RECORD).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def records(self) -> list[dict]:
        if not self.videos.is_dir():
            return []
        found = (self.read_record(entry.name) for entry in sorted(os.scandir(self.videos), key=lambda e: e.name))
        return [record for record in found if record is not None]

    def remove_partials(self) -> None:
        """Folders of videos a killed run did not finish. Call only when no other run writes to this prep."""
        shutil.rmtree(self.partial, ignore_errors=True)

    def new_workdir(self, video_id: str) -> Path:
        workdir = self.partial / f"{video_id}.{uuid.uuid4().hex[:8]}"
        workdir.mkdir(parents=True)
        return workdir

    def commit(self, workdir: Path, record: dict) -> None:
        """Write the record last, then move the whole folder into place in one rename."""
        write_text_atomic(workdir / RECORD, record_text(record))
        final = self.video_dir(record["video_id"])
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # --force, --retry-failed or a changed config: move the old one aside first
            old = self.partial / f"{record['video_id']}.old.{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(workdir, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(workdir, final)

    def forget(self, video_id: str) -> None:
        """Remove a video's folder and record: a rerun does it again."""
        shutil.rmtree(self.video_dir(video_id), ignore_errors=True)

    def update_metadata(self, record: dict, metadata: dict) -> dict:
        """A done video's record with new speaker, label, split or attributes (a new --meta or --layout), rewritten
        in place without redoing the video."""
        if all(record.get(key) == value for key, value in metadata.items()):
            return record
        record = {**record, **metadata}
        write_text_atomic(self.video_dir(record["video_id"]) / RECORD, record_text(record))
        return record

    def write_manifest(self, records: list[dict] | None = None) -> Path:
        """One row per record (all videos ever extracted into this prep), sorted by video_id, written atomically."""
        records = sorted(self.records() if records is None else records, key=lambda r: r["video_id"])
        write_parquet_atomic(self.manifest_path, manifest_table(records))
        return self.manifest_path


def manifest_table(records: list[dict]) -> pa.Table:
    """Base columns, then each record's scalar facts, then its metadata attributes (None where a video has none)."""
    base = dict(MANIFEST_SCHEMA)
    extra = sorted({k for r in records for k, v in r.items() if k not in base and _is_scalar(v)})
    attributes = sorted({k for r in records for k in r.get("attributes") or {}} - set(base) - set(extra))
    columns = {name: pa.array([r.get(name) for r in records], type=kind) for name, kind in MANIFEST_SCHEMA}
    for name in extra:
        columns[name] = pa.array([r.get(name) for r in records])
    for name in attributes:
        columns[name] = pa.array([(r.get("attributes") or {}).get(name) for r in records])
    return pa.table(columns)


def read_manifest(prep: str | os.PathLike) -> pa.Table:
    return pq.read_table(Path(prep) / "manifest.parquet")


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def record_text(record: dict) -> str:
    return json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_parquet_atomic(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
