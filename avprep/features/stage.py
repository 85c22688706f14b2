"""The audio-feature stage of extract: every method's audio features, on the video's clock, saved as .npy.

Written per video, each described in ``record.json`` ``arrays`` with its rate, start, window and hop:

    mfcc_syncnet.npy      (round(N/fps*100), 12)  SyncNet/DAVS MFCC at 100 Hz
    mfcc_atvgnet.npy      (round(N/fps*100), 12)  ATVGnet MFCC (python_speech_features conventions) at 100 Hz
    headgan_audio.npy     (N, 84)                 HeadGAN low-level mid-term statistics, one row per video frame
    asr.npy               (N, classes)            ASR log-probabilities per video frame, with --asr-model only
    transcript.npy        (N, 27)                 one-hot characters from the video's timed words: its side file
                                                  (<clip>.transcript.json, GRID .align, LRW .txt) where it has one,
                                                  else with --asr pocketsphinx the words pocketsphinx recognises

The Ear-SR spectrogram is cut at shard time from ``audio.flac`` (``avprep.features.earsr_spectrogram``): it
depends on where the 4 s clip starts, which only the recipe knows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from avprep.features.asr import (
    DEFAULT_ALPHABET,
    asr_logits,
    pocketsphinx_words,
    transcript_onehot,
)
from avprep.features.headgan import headgan_lowlevel
from avprep.features.mfcc import atvgnet_mfcc, syncnet_mfcc
from avprep.features.timebase import TimedFeature
from avprep.media.ffmpeg import MediaError
from avprep.pipeline.layouts import read_timed_words
from avprep.pipeline.stages import Stage, VideoContext


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
        if video.source.transcript:
            words = _timed_words(video.source.transcript, n_frames / fps)
            video.record.update(transcript_source="file", transcript_file=video.source.transcript)
        elif video.config.asr == "pocketsphinx":
            words = pocketsphinx_words(audio)
            video.record.update(transcript_source="pocketsphinx",
                                transcript_words=" ".join(word for _, _, word in words))
        else:
            words = None
        if words is not None:
            features["transcript"] = transcript_onehot(words, DEFAULT_ALPHABET, fps, n_frames)
        for name, feature in features.items():
            _save(video, name, feature)


def _timed_words(path: str, video_s: float) -> list[tuple[float, float, str]]:
    try:
        return read_timed_words(path, video_s)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise MediaError("bad transcript", f"{Path(path).name}: {error}") from None


def _save(video: VideoContext, name: str, feature: TimedFeature) -> None:
    np.save(video.workdir / f"{name}.npy", np.ascontiguousarray(feature.values, dtype=np.float32))
    video.arrays[name] = {"file": f"{name}.npy", **feature.describe()}
