"""Extract settings. Everything that changes what extract writes is in ExtractConfig and so in its hash."""
from __future__ import annotations

import dataclasses
import hashlib
import json

SCHEMA_VERSION = 2  # 2: frames.parquet has_audio, record audio_start_s


@dataclasses.dataclass(frozen=True)
class FaceConfig:
    """Face analysis settings; times are in seconds so they mean the same at any frame rate."""

    canonical_size: int = 256  # side of the stored aligned crop; recipes cut their own crops from it
    jpeg_quality: int = 95
    detect_every_s: float = 1.0  # time between detector runs while a face is followed (cuts and losses re-detect)
    max_gap_s: float = 0.32  # longer losses end a track; shorter ones are interpolated
    landmark_smoothing_s: float = 0.04  # Gaussian sigma for the stored smoothed landmarks
    crop_centre_smoothing_s: float = 0.12  # Gaussian sigma for where the crop sits: follows the head
    crop_scale_smoothing_s: float = 0.3  # ... and for its scale and rotation, which real heads change slowly
    min_detection_confidence: float = 0.5
    insightface_root: str | None = None  # a local insightface model pack: use its SCRFD detector
    min_iod_px: float = 20.0  # frames whose eyes are closer than this (in the source frame) are flagged
    min_blur: float = 20.0  # variance of Laplacian of the canonical crop below this is flagged
    min_mesh_score: float = 0.8  # meshes whose face-presence score is below this are flagged (MediaPipe keeps >= 0.5)
    max_yaw_deg: float = 45.0
    max_pitch_deg: float = 30.0
    max_offset_frames: int = 15  # A/V offset search range
    fix_offset: bool = False  # shift the stored audio by the estimated offset
    min_offset_confidence: float = 0.3  # ... only when the estimate is at least this confident (see face.sync)


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    fps: float | None = None  # output frame rate; None keeps the source's (its average when variable)
    max_duration_s: float = 4 * 3600.0  # longer videos fail as "too long" instead of tying up a worker for hours
    # Shorter videos fail as "too short": the shortest window a shipped recipe cuts is HeadGAN's 6 frames at
    # 25 fps (ATVGnet cuts 16, DAVS 25; Wav2Pix and Ear-SR one frame with 1 s and 4 s of speech around it).
    min_duration_s: float = 0.24
    silence_dbfs: float = -60.0  # audio whose RMS is below this fails as "silent audio"
    face: FaceConfig | None = FaceConfig()  # None: no face analysis
    morphable: bool = True  # fit the 3D morphable model to every face track (needs face analysis)
    morphable_basis: str | None = None  # a basis .npz (avprep.morphable.model); None: the shipped default
    audio_features: bool = True  # MFCC variants and HeadGAN audio statistics (avprep.features)
    asr_model: str | None = None  # ONNX acoustic model for per-frame character posteriors (avprep.features.asr)
    asr: str | None = None  # "pocketsphinx": timed words of videos without a transcript file (avprep.features.asr)

    def hash(self) -> str:
        """Short stable digest stored with every record; a re-run with another hash redoes the video."""
        settings = dataclasses.asdict(self)
        if settings["asr"] is None:  # left out when off: preps made before the option keep their hash
            del settings["asr"]
        payload = json.dumps({"schema_version": SCHEMA_VERSION, **settings}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]
