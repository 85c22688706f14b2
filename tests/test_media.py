"""Media I/O: probing, constant-rate chunked decoding, rotation, VFR and audio on the video's timeline."""
from __future__ import annotations

import numpy as np
import pytest
from support import run_ffmpeg

from avprep.media.audio import SAMPLE_RATE, decode_audio
from avprep.media.probe import channel_count, probe
from avprep.media.video import decode_frames
from avprep.synth.talking_head import make_talking_head


def decode_all(path, **kwargs) -> np.ndarray:
    info = probe(path)
    chunks = list(decode_frames(path, width=info.width, height=info.height, fps=kwargs.pop("fps", info.fps), **kwargs))
    assert [c.start for c in chunks] == list(np.cumsum([0] + [len(c.frames) for c in chunks[:-1]]))
    return np.concatenate([c.frames for c in chunks])


def test_probe_reports_stream_facts(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_talking_head(clip, seconds=2.0, fps=25, size=(320, 240), sample_rate=44100, channels=2)
    info = probe(clip)
    assert (info.width, info.height, info.rotation) == (320, 240, 0)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.fps == 25.0 and not info.variable_fps and info.n_packets == 50
    assert (info.audio_sr, info.audio_channels, info.audio_streams) == (44100, 2, 1)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("fps", ["24", "25", "30000/1001", "30", "60"])
def test_decode_gives_exactly_the_encoded_frames(tmp_path, fps):
    clip = tmp_path / "clip.mp4"
    truth = make_talking_head(clip, seconds=1.5, fps=fps, size=(160, 128))
    info = probe(clip)
    num, _, den = fps.partition("/")
    assert info.fps == pytest.approx(int(num) / int(den or 1), rel=1e-6)
    frames = decode_all(clip)
    assert frames.shape == (truth["n_frames"], 128, 160, 3) and frames.dtype == np.uint8


def test_small_chunks_decode_the_same_pixels_as_one_chunk(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_talking_head(clip, seconds=1.0, fps=25, size=(160, 128))
    one_frame_chunks = decode_all(clip, max_chunk_bytes=1)
    whole = decode_all(clip, max_chunk_bytes=1 << 30)
    assert np.array_equal(one_frame_chunks, whole)


def test_resampling_to_another_rate_keeps_duration(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_talking_head(clip, seconds=2.0, fps=30, size=(160, 128))
    assert len(decode_all(clip, fps=25.0)) == 50


def test_rotation_metadata_is_applied(tmp_path):
    plain, rotated = tmp_path / "plain.mp4", tmp_path / "rotated.mp4"
    make_talking_head(plain, seconds=0.5, fps=25, size=(320, 240))
    run_ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated))
    info = probe(rotated)
    assert (info.width, info.height, info.rotation) == (240, 320, 90)
    upright, turned = decode_all(plain), decode_all(rotated)
    assert turned.shape[1:3] == (320, 240)
    # 90 degrees counter-clockwise, as players show it
    assert np.abs(turned.astype(int) - np.rot90(upright, k=1, axes=(1, 2))).mean() < 1.0


def test_variable_frame_rate_is_resampled_to_constant_frames(catalogue):
    folder, _ = catalogue
    info = probe(folder / "vfr.mkv")
    assert info.variable_fps
    frames = decode_all(folder / "vfr.mkv", fps=25.0)
    assert abs(len(frames) - round(info.duration_s * 25)) <= 1


@pytest.mark.parametrize("sample_rate,channels", [(44100, 2), (8000, 1), (48000, 6)])
def test_audio_decodes_to_16k_mono_of_the_right_length(tmp_path, sample_rate, channels):
    clip = tmp_path / "clip.mp4"
    make_talking_head(clip, seconds=2.0, fps=25, size=(160, 128), sample_rate=sample_rate, channels=channels, seed=3)
    reference = tmp_path / "reference.mp4"
    make_talking_head(reference, seconds=2.0, fps=25, size=(160, 128), sample_rate=16000, channels=1, seed=3)
    info = probe(clip)
    assert (info.audio_sr, info.audio_channels) == (sample_rate, channels)
    audio = decode_audio(clip, channels)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 2.0 * SAMPLE_RATE) <= SAMPLE_RATE / 25  # within one video frame
    # The same speech, whatever the source rate and channels: compare below 4 kHz (the 8 kHz source's limit).
    same = decode_audio(reference, 1)
    n = min(audio.size, same.size)
    assert np.corrcoef(_lowpass(audio[:n]), _lowpass(same[:n]))[0, 1] > 0.9


def _lowpass(signal: np.ndarray) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    return sosfiltfilt(butter(8, 3500, fs=SAMPLE_RATE, output="sos"), signal)


def test_audio_that_starts_late_is_padded_onto_the_video_timeline(tmp_path):
    clip, late = tmp_path / "clip.mp4", tmp_path / "late.mp4"
    make_talking_head(clip, seconds=2.0, fps=25, size=(160, 128), sample_rate=16000)
    run_ffmpeg("-i", str(clip), "-itsoffset", "0.5", "-i", str(clip), "-map", "0:v", "-map", "1:a",
               "-c", "copy", str(late))
    original, shifted = decode_audio(clip, 1), decode_audio(late, 1)
    lag = np.argmax(np.correlate(shifted[: 3 * SAMPLE_RATE // 2], original[: SAMPLE_RATE // 2], mode="valid"))
    assert abs(lag / SAMPLE_RATE - 0.5) < 0.03  # AAC priming may move it by one 1024-sample frame at most
    assert np.abs(shifted[: int(0.45 * SAMPLE_RATE)]).max() < 1e-3


def test_channel_layout_names():
    names = ["mono", "stereo", "5.1(side)", "7.1", "3 channels", "quad"]
    assert [channel_count(n) for n in names] == [1, 2, 6, 8, 3, 4]


def test_the_mp4_writer_muxes_frames_and_sound_of_the_same_length(tmp_path):
    from avprep.media.encode import write_video

    frames = np.random.default_rng(0).integers(0, 256, (37, 96, 128, 3), dtype=np.uint8)
    audio = np.sin(np.arange(int(37 / 25 * SAMPLE_RATE)) * 0.05).astype(np.float32) * 0.5
    out = tmp_path / "out.mp4"
    write_video(out, frames, audio, SAMPLE_RATE, (128, 96), 25)
    info = probe(out)
    assert (info.video_codec, info.audio_codec, info.width, info.height) == ("h264", "aac", 128, 96)
    assert info.n_packets == 37 and info.fps == 25.0 and len(decode_all(out)) == 37
    heard = decode_audio(out, 1)
    assert abs(len(heard) - len(audio)) < SAMPLE_RATE / 25 and np.abs(heard).max() > 0.3


def test_a_second_of_a_demo_voice_says_who_speaks():
    """Wav2Pix draws a face from a voice: each demo identity's pitch must name it from one second of its speech
    more often than not (two speakers' pitches were once 2 % apart: 0.38 named right), and its formants rise with
    its formant scale."""
    import librosa

    from avprep.synth.speech import synth_speech
    from avprep.synth.talking_head import VOICES

    def windows(voice, seed):
        """The median pitch (log Hz) and spectral centroid of each loud second of 8 s of the voice."""
        speech, envelope = synth_speech(8.0, 16000, seed, f0_hz=voice[0], formant_scale=voice[1])
        out = []
        for second, loudness in zip(speech.reshape(8, 16000), envelope.reshape(8, 16000)):
            pitch = librosa.yin(second, fmin=60, fmax=400, sr=16000, frame_length=1024, hop_length=256)
            loud = loudness[np.arange(len(pitch)) * 256 % 16000] > 0.3
            centroid = librosa.feature.spectral_centroid(y=second, sr=16000)[0]
            out.append((np.log(np.median(pitch[loud])), np.median(centroid[loud[:len(centroid)]])))
        return np.array(out)

    known = {name: windows(voice, 0).mean(0) for name, voice in VOICES.items()}
    names, named, heard = list(known), 0, 0
    for name, voice in VOICES.items():
        for pitch, _ in windows(voice, 1):
            named += names[int(np.argmin([abs(pitch - known[other][0]) for other in names]))] == name
            heard += 1
    assert named / heard > 0.6
    by_scale = sorted(VOICES, key=lambda name: VOICES[name][1])
    assert known[by_scale[-1]][1] > 1.15 * known[by_scale[0]][1]  # the highest tract's formants, well above
