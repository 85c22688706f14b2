"""The stage contract of the per-video pipeline, and the stages every extract runs.

A stage sees one video through a ``VideoContext``: ``open`` before any frame (the probe and, after the audio
stage, the audio are there), ``frames`` for each decoded chunk in order, ``close`` after the last one. Stages write
files into ``video.workdir`` and scalar facts into ``video.record``, and describe every array file they write in
``video.arrays`` with its time base. A stage rejects a video by raising ``MediaError(kind, message)``. Frames are
decoded once and handed to every stage, so adding a stage never adds a decode.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from avprep.media.audio import SAMPLE_RATE, decode_audio, write_flac
from avprep.media.ffmpeg import MediaError
from avprep.media.probe import MediaInfo
from avprep.media.video import FrameChunk
from avprep.pipeline.config import ExtractConfig
from avprep.pipeline.inputs import VideoSource


@dataclasses.dataclass
class VideoContext:
    source: VideoSource
    config: ExtractConfig
    info: MediaInfo
    fps: float  # rate of the decoded frames: frame k is at k / fps seconds
    workdir: Path  # temporary folder that becomes prep/videos/<video_id>/ when the video completes
    record: dict = dataclasses.field(default_factory=dict)
    arrays: dict = dataclasses.field(default_factory=dict)  # name -> {"file": ..., time base ...}
    audio: np.ndarray | None = None  # 16 kHz mono float32 on the frames' timeline
    audio_start: int = 0  # first sample of real audio: the samples before it are silence padding a late track
    audio_end: int = 0  # end of the real audio (the track may end before the video)


class Stage:
    """Base with no-op hooks; a stage overrides the ones it needs."""

    name = "stage"
    needs_frames = False

    def open(self, video: VideoContext) -> None:
        pass

    def frames(self, video: VideoContext, chunk: FrameChunk) -> None:
        pass

    def close(self, video: VideoContext) -> None:
        pass


class AudioStage(Stage):
    """16 kHz mono audio aligned to the video's time zero, stored as FLAC; silent tracks are rejected.

    The real audio runs from ``audio_start_s`` (after the silence that pads a track starting late) to
    ``audio_duration_s`` (a track may end before the video); frames outside it get ``has_audio = false``.
    """

    name = "audio"

    def open(self, video: VideoContext) -> None:
        audio = decode_audio(video.source.path, video.info.audio_channels or 1)
        if audio.size == 0:
            raise MediaError("no audio stream", "the audio stream decodes to no samples")
        rms_dbfs = 10 * np.log10(float(np.mean(np.square(audio, dtype=np.float64))) + 1e-20)
        if rms_dbfs < video.config.silence_dbfs:
            raise MediaError("silent audio", f"audio RMS {rms_dbfs:.0f} dBFS is below {video.config.silence_dbfs:.0f}")
        write_flac(video.workdir / "audio.flac", audio)
        video.audio = audio
        video.audio_start, video.audio_end = late_start(audio, video.info.audio_start_s, video.fps), len(audio)
        video.arrays["audio"] = {"file": "audio.flac", "sample_rate": SAMPLE_RATE, "start_s": 0.0}
        video.record.update(audio_duration_s=audio.size / SAMPLE_RATE, audio_rms_dbfs=round(rms_dbfs, 2),
                            audio_start_s=video.audio_start / SAMPLE_RATE)


def late_start(audio: np.ndarray, stream_start_s: float, fps: float) -> int:
    """Samples of silence the decoder put before a track whose first packet comes at least a frame after the
    video's time zero; 0 for a track that starts with the video. (The first packet may hold the codec's priming,
    e.g. AAC's 1024 samples, so the sound itself can start up to that much later.)"""
    return min(int(round(stream_start_s * SAMPLE_RATE)), len(audio)) if stream_start_s >= 1 / fps else 0


class VideoTimingStage(Stage):
    """Counts the constant-rate frames actually decoded; catches truncation and audio/video length mismatch."""

    name = "video"
    needs_frames = True

    def open(self, video: VideoContext) -> None:
        self.n_frames = 0

    def frames(self, video: VideoContext, chunk: FrameChunk) -> None:
        self.n_frames += len(chunk.frames)

    def close(self, video: VideoContext) -> None:
        duration = self.n_frames / video.fps
        expected = video.info.n_packets / video.info.fps
        if self.n_frames == 0:
            raise MediaError("decode error", "no frame could be decoded")
        if duration < 0.9 * expected - 1.0 / video.fps:
            raise MediaError("truncated", f"decoded {duration:.2f} s of video out of {expected:.2f} s")
        mismatch = video.record.get("audio_duration_s", duration) - duration
        video.record.update(
            n_frames=self.n_frames, video_duration_s=duration,
            av_duration_mismatch_s=round(mismatch, 6),
            av_duration_mismatch=bool(abs(mismatch) > 1.0 / video.fps),
        )
