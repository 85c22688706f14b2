"""Extract settings. Everything that changes what extract writes is in ExtractConfig and so in its hash."""
from __future__ import annotations

import dataclasses
import hashlib
import json

SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    fps: float | None = None  # output frame rate; None keeps the source's (its average when variable)
    max_duration_s: float = 4 * 3600.0  # longer videos fail as "too long" instead of tying up a worker for hours
    silence_dbfs: float = -60.0  # audio whose RMS is below this fails as "silent audio"

    def hash(self) -> str:
        """Short stable digest stored with every record; a re-run with another hash redoes the video."""
        payload = json.dumps({"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]
