import pickle

import numpy as np
import pytest
import soundfile as sf

from modeling_dino_speech.data.audio import (
    AudioError,
    audio_info,
    is_silent,
    load_audio,
    load_segments,
    resample,
)

SR = 16000


def _tone(sr: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def wav16k(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(16000, 1.0), 16000, subtype="PCM_16")
    return path


def test_load_plain_16k(wav16k):
    wav = load_audio(wav16k, SR)
    assert wav.dtype == np.float32 and wav.shape == (16000,)
    assert np.allclose(wav, _tone(16000, 1.0), atol=1e-3)


def test_audio_info_header_only(wav16k):
    info = audio_info(wav16k)
    n, sr, dur = info
    assert (n, sr) == (16000, 16000) and dur == pytest.approx(1.0)
    assert info.num_frames == 16000 and info.sample_rate == 16000


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampled_to_16k_and_keeps_frequency(tmp_path, sr):
    path = tmp_path / f"tone_{sr}.wav"
    sf.write(path, _tone(sr, 1.0, freq=440.0), sr)
    wav = load_audio(path, SR)
    assert wav.shape[0] == pytest.approx(16000, abs=1)
    # The dominant frequency survives resampling.
    spectrum = np.abs(np.fft.rfft(wav))
    assert abs(np.argmax(spectrum) * 16000 / len(wav) - 440.0) < 2.0
    # Native-rate read when asked.
    assert load_audio(path, sampling_rate=None).shape == (sr,)


def test_multichannel_is_averaged(tmp_path):
    left, right = _tone(16000, 0.5, amp=0.5), np.zeros(8000, np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    assert np.allclose(load_audio(path, SR), left / 2, atol=1e-6)


def test_partial_read_uses_native_frames(tmp_path):
    ramp = (np.arange(48000, dtype=np.float32) / 48000.0) - 0.5
    path = tmp_path / "ramp.wav"
    sf.write(path, ramp, 16000, subtype="FLOAT")
    crop = load_audio(path, SR, start=1000, frames=500)
    assert np.array_equal(crop, ramp[1000:1500])
    # Past the end: what exists, not padded.
    assert load_audio(path, SR, start=47900, frames=500).shape == (100,)
    # At 48 kHz the start/frames are native: 4800 frames = 0.1 s -> 1600 samples at 16 kHz.
    path48 = tmp_path / "ramp48.wav"
    sf.write(path48, np.tile(ramp, 3), 48000, subtype="FLOAT")
    assert load_audio(path48, SR, start=48000, frames=4800).shape == (1600,)
    with pytest.raises(AudioError, match="beyond the end"):
        load_audio(path, SR, start=48000)
    with pytest.raises(AudioError, match="must be positive"):
        load_audio(path, SR, start=0, frames=0)


def test_missing_file_named(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="nope.wav: file does not exist") as err:
        load_audio(path, SR)
    assert err.value.path == str(path)
    with pytest.raises(AudioError, match="does not exist"):
        audio_info(path)


def test_corrupt_and_empty_and_unsupported(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00garbage that is not audio" * 4)
    with pytest.raises(AudioError, match="corrupt.wav: unreadable or unsupported"):
        load_audio(corrupt, SR)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        audio_info(empty)
    m4a = tmp_path / "clip.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 64)
    with pytest.raises(AudioError, match=r"clip.m4a: .*\.m4a.*convert"):
        load_audio(m4a, SR)
    folder = tmp_path / "dir.wav"
    folder.mkdir()
    with pytest.raises(AudioError, match="directory"):
        load_audio(folder, SR)


def test_truncated_wav(tmp_path, wav16k):
    data = wav16k.read_bytes()
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated.wav: truncated"):
        load_audio(truncated, SR)
    with pytest.raises(AudioError, match="truncated"):
        audio_info(truncated)


def test_zero_length(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="zero-length"):
        load_audio(path, SR)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_rejected(tmp_path, bad):
    x = _tone(16000, 0.1)
    x[10] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="bad.wav: 1 NaN/Inf"):
        load_audio(path, SR)


def test_silence_allowed_but_flagged(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    wav = load_audio(path, SR)
    assert wav.shape == (16000,) and is_silent(wav)
    assert not is_silent(_tone(16000, 0.1))
    assert is_silent(_tone(16000, 0.1, amp=1e-5))


def test_clipped_allowed(tmp_path):
    x = np.clip(_tone(16000, 0.5, amp=3.0), -1.0, 1.0)
    path = tmp_path / "clipped.wav"
    sf.write(path, x, 16000, subtype="PCM_16")
    wav = load_audio(path, SR)
    assert np.mean(np.abs(wav) >= 0.999) > 0.3  # the clipped samples are kept as they are


def test_flac_and_ogg(tmp_path):
    for ext in ("flac", "ogg"):
        path = tmp_path / f"tone.{ext}"
        sf.write(path, _tone(16000, 0.5), 16000)
        assert load_audio(path, SR).shape[0] == pytest.approx(8000, abs=1)


def test_error_pickles_with_path_and_problem():
    err = pickle.loads(pickle.dumps(AudioError("/x/y.wav", "broken")))
    assert isinstance(err, ValueError) and err.path == "/x/y.wav" and str(err) == "/x/y.wav: broken"


def test_resample_identity_and_length():
    x = _tone(8000, 1.0)
    assert resample(x, 8000, 8000) is x
    assert resample(x, 8000, 16000).shape == (16000,)


def test_load_segments_opens_once_and_matches_load_audio(tmp_path):
    x = np.random.default_rng(0).standard_normal((22050, 2)).astype(np.float32) * 0.1
    path = tmp_path / "st.wav"
    sf.write(path, x, 22050, subtype="FLOAT")
    from modeling_dino_speech.data.audio import load_segments

    segs = load_segments(path, [(0, 2205), (10000, 4410), (None, None)], SR)
    assert [len(s) for s in segs] == [1600, 3200, 16000]
    assert np.allclose(segs[1], load_audio(path, SR, start=10000, frames=4410))
    left = load_audio(path, sampling_rate=None, channel=0)
    assert np.array_equal(left, x[:, 0])
    with pytest.raises(AudioError, match="channel 2 requested"):
        load_audio(path, SR, channel=2)


def test_header_less_gsm_streams_are_read_in_segments(tmp_path):
    """Raw GSM 6.10 files (as Asterisk prompt packages ship them) cannot seek: segments still come out right."""
    t = np.arange(8000 * 2) / 8000
    x = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    path = tmp_path / "prompt.gsm"
    sf.write(path, x, 8000, format="RAW", subtype="GSM610")
    whole = load_audio(path, sampling_rate=None)
    assert whole.shape == (16000,) and np.abs(whole).max() > 0.1
    first, later = load_segments(path, [(0, 4000), (8000, 4000)], sampling_rate=None)
    np.testing.assert_array_equal(first, whole[:4000])
    np.testing.assert_array_equal(later, whole[8000:12000])
    assert load_audio(path, sampling_rate=16000).shape == (32000,)
