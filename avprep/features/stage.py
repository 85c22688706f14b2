"""The audio-feature stage of extract: every method's audio features, on the video's clock, saved as .npy.

Written per video, each described in ``record.json`` ``arrays`` with its rate, start, window and hop:

    mfcc_syncnet.npy      (round(N/fps*100), 12)  SyncNet/DAVS MFCC at 100 Hz
    mfcc_atvgnet.npy      (round(N/fps*100), 12)  ATVGnet MFCC (python_speech_features conventions) at 100 Hz
    headgan_audio.npy     (N, 84)                 HeadGAN low-level mid-term statistics, one row per video frame
    asr.npy               (N, classes)            ASR log-probabilities per video frame, with --asr-model only
    transcript.npy        (N, 27)                 one-hot characters from <video>.transcript.json, when present

The Ear-SR spectrogram is cut at shard time from ``audio.flac`` (``avprep.features.earsr_spectrogram``): it
depends on where the 4 s clip starts, which only the recipe knows.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from avprep.features.asr import DEFAULT_ALPHABET, asr_logits, transcript_onehot
from avprep.features.headgan import headgan_lowlevel
from avprep.features.mfcc import atvgnet_mfcc, syncnet_mfcc
from avprep.features.timebase import TimedFeature
from avprep.media.ffmpeg import MediaError
from avprep.pipeline.stages import Stage, VideoContext


def transcript_path(video_path: str) -> Path:
    """``clip.mp4`` -> ``clip.transcript.json``: a list of {"start": s, "end": s, "text": "..."}."""
    return Path(video_path).with_suffix(".transcript.json")


class AudioFeatureStage(Stage):
    name = "audio_features"

    def close(self, video: VideoContext) -> None:
        audio, fps, n_frames = video.audio, video.fps, video.record["n_frames"]
        features = {
            "mfcc_syncnet": syncnet_mfcc(audio, fps, n_frames),
            "mfcc_atvgnet": atvgnet_mfcc(audio, fps, n_frames),
            "headgan_audio": headgan_lowlevel(audio, fps, n_frames),
        }
        if video.config.asr_model:
            features["asr"] = asr_logits(video.config.asr_model, audio, fps, n_frames)
        transcript = transcript_path(video.source.path)
        if transcript.exists():
            features["transcript"] = transcript_onehot(_timed_words(transcript), DEFAULT_ALPHABET, fps, n_frames)
        for name, feature in features.items():
            _save(video, name, feature)


def _timed_words(path: Path) -> list[tuple[float, float, str]]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        return [(float(e["start"]), float(e["end"]), str(e["text"])) for e in entries]
    except (ValueError, KeyError, TypeError) as error:
        raise MediaError("bad transcript", f"{path.name}: {error}") from None


def _save(video: VideoContext, name: str, feature: TimedFeature) -> None:
    np.save(video.workdir / f"{name}.npy", np.ascontiguousarray(feature.values, dtype=np.float32))
    video.arrays[name] = {"file": f"{name}.npy", **feature.describe()}
