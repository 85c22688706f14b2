"""Audio features for talking-face methods, each on the video's clock (see ``TimedFeature``).

Input everywhere: 16 kHz mono float32 audio whose sample ``n`` plays at ``n / 16000`` s, and the video's
``fps`` and ``n_frames`` (frame ``k`` at ``k / fps`` s). 100 Hz features have ``round(n_frames / fps * 100)``
rows; per-video-frame features have ``n_frames`` rows, row ``k`` centred on ``k / fps``.
"""
from avprep.features.asr import DEFAULT_ALPHABET, asr_logits, headgan_asr_window, transcript_onehot
from avprep.features.headgan import HEADGAN_COLUMNS, headgan_lowlevel
from avprep.features.mfcc import atvgnet_mfcc, davs_mfcc, syncnet_mfcc
from avprep.features.spectrogram import earsr_spectrogram
from avprep.features.timebase import TimedFeature

__all__ = [
    "DEFAULT_ALPHABET", "HEADGAN_COLUMNS", "TimedFeature", "asr_logits", "atvgnet_mfcc", "davs_mfcc",
    "earsr_spectrogram", "headgan_asr_window", "headgan_lowlevel", "syncnet_mfcc", "transcript_onehot",
]
