import numpy as np
import pytest
import torch
import torchaudio

from modeling_dino_speech import DinoSpeechFeatureExtractor


def kaldi_reference(wave: np.ndarray, **kw) -> torch.Tensor:
    return torchaudio.compliance.kaldi.fbank(
        torch.from_numpy(wave)[None] * 32768,
        num_mel_bins=80,
        frame_length=25,
        frame_shift=10,
        low_freq=20,
        high_freq=7600,
        dither=0.0,
        sample_frequency=16000,
        window_type="povey",
        **kw,
    )


@pytest.mark.parametrize("num_samples", [400, 16000, 23456, 48000])
def test_fbank_matches_torchaudio_kaldi(num_samples):
    rng = np.random.default_rng(num_samples)
    t = np.arange(num_samples) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(num_samples)).astype(np.float32)
    fe = DinoSpeechFeatureExtractor(mean_normalization=None)
    ours = fe(wave, sampling_rate=16000, return_tensors="pt")["input_features"][0]
    ref = kaldi_reference(wave)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-3


@pytest.mark.parametrize("rate, bins, frame_ms, dc", [(16000, 80, 25, 0.2), (8000, 40, 25, 0.0), (22050, 64, 20, -0.1)])
def test_fbank_matches_kaldi_with_offsets_other_rates_and_windows(rate, bins, frame_ms, dc):
    # The frame mean is removed after the FFT and pre-emphasis runs on the whole waveform: a DC offset, other
    # window sizes and a hop that does not divide the window check that this rearrangement is exact.
    rng = np.random.default_rng(rate)
    num_samples = int(1.3 * rate)
    t = np.arange(num_samples) / rate
    wave = (dc + 0.2 * np.sin(2 * np.pi * 300 * t) + 0.02 * rng.standard_normal(num_samples)).astype(np.float32)
    wave[: rate // 4] = dc  # a stretch of pure offset: the log floor decides those frames
    fe = DinoSpeechFeatureExtractor(
        feature_size=bins, sampling_rate=rate, frame_length_ms=frame_ms, high_freq=0.45 * rate, mean_normalization=None
    )
    ours = fe(wave, sampling_rate=rate, return_tensors="pt")["input_features"][0]

    def kaldi(samples: torch.Tensor) -> torch.Tensor:
        return torchaudio.compliance.kaldi.fbank(
            samples[None] * 32768,
            num_mel_bins=bins,
            frame_length=frame_ms,
            frame_shift=10,
            low_freq=20,
            high_freq=0.45 * rate,
            dither=0.0,
            sample_frequency=rate,
            window_type="povey",
        )

    # Near-empty bins are float32 rounding noise in any implementation: measure against Kaldi in float64 (with
    # the float32 log floor) and ask to be no further from it than torchaudio's own float32 computation.
    exact = kaldi(torch.from_numpy(wave).double()).clamp_min(float(np.log(np.finfo(np.float32).eps))).float()
    single = kaldi(torch.from_numpy(wave))
    assert ours.shape == exact.shape
    assert (ours - exact).abs().max().item() <= (single - exact).abs().max().item() + 1e-3
    # On frames holding only the offset, the energy is zero: the log floor, where float32 Kaldi reads noise.
    silent = fe.num_frames(rate // 4)
    assert torch.allclose(ours[:silent], torch.full_like(ours[:silent], float(np.log(np.finfo(np.float32).eps))))


def test_batch_equals_one_by_one_and_mask():
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 5000, 32000)]
    for norm in ("sliding", "utterance", None):
        fe = DinoSpeechFeatureExtractor(mean_normalization=norm, mean_normalization_window=50)
        batch = fe(waves, sampling_rate=16000, return_tensors="pt")
        assert batch["input_features"].shape == (3, 198, 80)
        assert batch["attention_mask"].sum(1).tolist() == [98, 29, 198]
        for i, w in enumerate(waves):
            alone = fe(w, sampling_rate=16000, return_tensors="pt")["input_features"][0]
            n = alone.shape[0]
            torch.testing.assert_close(batch["input_features"][i, :n], alone, atol=1e-4, rtol=1e-4)
            assert batch["input_features"][i, n:].abs().sum() == 0


def test_sliding_mean_normalisation_matches_direct_windows():
    rng = np.random.default_rng(1)
    wave = rng.standard_normal(16000 * 3).astype(np.float32) * 0.1
    window = 150
    fe = DinoSpeechFeatureExtractor(mean_normalization="sliding", mean_normalization_window=window)
    raw = DinoSpeechFeatureExtractor(mean_normalization=None)(wave, sampling_rate=16000, return_tensors="pt")
    raw = raw["input_features"][0].double()
    ours = fe(wave, sampling_rate=16000, return_tensors="pt")["input_features"][0].double()
    frames = raw.shape[0]
    expected = torch.empty_like(raw)
    for t in range(frames):  # Kaldi's apply-cmvn-sliding --center=true, written out frame by frame
        start, end = t - window // 2, t - window // 2 + window
        if start < 0:
            end, start = end - start, 0
        if end > frames:
            start, end = max(0, start - (end - frames)), frames
        expected[t] = raw[t] - raw[start:end].mean(0)
    torch.testing.assert_close(ours, expected, atol=1e-3, rtol=0)
    utt = DinoSpeechFeatureExtractor(mean_normalization="utterance")(wave, sampling_rate=16000, return_tensors="pt")
    assert utt["input_features"][0].mean(0).abs().max() < 1e-4


def test_resampling_other_rates():
    fe = DinoSpeechFeatureExtractor()
    t = np.arange(8000) / 8000
    wave8k = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    out = fe(wave8k, sampling_rate=8000, return_tensors="pt")
    assert out["input_features"].shape == (1, fe.num_frames(16000), 80)


def test_numpy_and_list_outputs():
    fe = DinoSpeechFeatureExtractor()
    waves = [np.zeros(800, np.float32) + 0.01, np.ones(1600, np.float32) * 0.01]
    as_np = fe(waves, sampling_rate=16000, return_tensors="np")
    assert as_np["input_features"].shape == (2, 8, 80)
    as_list = fe(waves, sampling_rate=16000)
    assert [len(x) for x in as_list["input_features"]] == [3, 8]


@pytest.mark.parametrize(
    "bad, rate, error, match",
    [
        (np.zeros(0, np.float32), 16000, ValueError, "empty"),
        (np.array([0.0, np.nan] * 400, np.float32), 16000, ValueError, "NaN"),
        (np.zeros((2, 16000), np.float32), 16000, ValueError, "1-D"),
        ([np.zeros((16000, 2, 2), np.float32)], 16000, ValueError, "mono"),
        ([np.zeros((64, 16000), np.float32)], 16000, ValueError, "at most 16 channels"),
        (np.zeros(16000, np.int64), 16000, TypeError, "no PCM format"),
        ([np.zeros(16000), np.zeros(16000)], [16000], ValueError, "1 sampling rates for 2 waveforms"),
        (np.zeros(16000, np.float32), "16000", TypeError, "sampling_rate"),
        (np.zeros(16000, np.float32), 16000.0, TypeError, "sampling_rate"),
        (np.zeros(100, np.float32), 16000, ValueError, "shorter than one"),
        ([], 16000, ValueError, "empty list"),
    ],
)
def test_bad_inputs_raise_clear_errors(bad, rate, error, match):
    with pytest.raises(error, match=match):
        DinoSpeechFeatureExtractor()(bad, sampling_rate=rate)


def test_save_and_load(tmp_path, tiny_config):
    from transformers import AutoFeatureExtractor

    fe = DinoSpeechFeatureExtractor.from_model_config(tiny_config)
    fe.save_pretrained(tmp_path)
    loaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert isinstance(loaded, DinoSpeechFeatureExtractor)
    assert loaded.to_dict() == fe.to_dict()


def _voice(seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.2 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_multi_channel_audio_is_averaged_in_either_layout():
    fe = DinoSpeechFeatureExtractor()
    left, right = _voice(), 0.5 * _voice()[::-1].copy()
    mono = fe((left + right) / 2, sampling_rate=16000, return_tensors="np")["input_features"]
    channels_last = np.stack([left, right], axis=1)  # (samples, channels): what soundfile reads
    for stereo in (channels_last, [channels_last], [channels_last.T], torch.from_numpy(channels_last)):
        out = fe(stereo, sampling_rate=16000, return_tensors="np")["input_features"]
        np.testing.assert_allclose(out, mono, atol=1e-4)
    # (1, samples) at the top level is one mono waveform, as torchaudio.load returns it.
    np.testing.assert_allclose(
        fe(left[None], sampling_rate=16000, return_tensors="np")["input_features"],
        fe(left, sampling_rate=16000, return_tensors="np")["input_features"],
    )


def test_each_waveform_has_its_own_sampling_rate():
    fe = DinoSpeechFeatureExtractor()
    wave16, wave8 = _voice(1.0, 16000), _voice(1.0, 8000)
    together = fe([wave16, wave8], sampling_rate=[16000, 8000], return_tensors="pt")
    alone8 = fe(wave8, sampling_rate=8000, return_tensors="pt")
    frames = alone8["input_features"].shape[1]
    torch.testing.assert_close(together["input_features"][1, :frames], alone8["input_features"][0], atol=1e-4, rtol=0)
    assert together["input_features"].shape[0] == 2


@pytest.mark.parametrize("dtype, scale, offset", [(np.int16, 32768, 0), (np.int32, 2**31, 0), (np.uint8, 128, 128)])
def test_integer_pcm_is_scaled_to_unit_range(dtype, scale, offset):
    fe = DinoSpeechFeatureExtractor()
    wave = _voice()
    pcm = np.round(wave * (scale - 1) + offset).astype(dtype)
    as_float = ((pcm.astype(np.float64) - offset) / scale).astype(np.float32)  # what the PCM samples stand for
    expected = fe(as_float, sampling_rate=16000, return_tensors="np")["input_features"]
    np.testing.assert_allclose(fe(pcm, sampling_rate=16000, return_tensors="np")["input_features"], expected)
    tensor = fe(torch.from_numpy(pcm.astype(np.int32)) if dtype == np.int32 else pcm, sampling_rate=16000)
    np.testing.assert_allclose(np.asarray(tensor["input_features"][0]), expected[0])


def test_float_audio_in_pcm_range_is_flagged():
    with pytest.warns(UserWarning, match="integer PCM stored as floats"):
        DinoSpeechFeatureExtractor()(_voice() * 32768, sampling_rate=16000)


@pytest.mark.parametrize(
    "wave",
    [
        np.zeros(16000, np.float32),
        np.full(16000, 0.3, np.float32),
        np.full(16000, 0.3) + 1e-5 * np.sin(np.arange(16000)),
    ],
)
def test_silent_and_dc_waveforms_are_flagged(wave):
    from modeling_dino_speech.feature_extraction_dino_speech import DegenerateAudioWarning

    with pytest.warns(DegenerateAudioWarning, match="waveform 1: .*no speaker information"):
        DinoSpeechFeatureExtractor()([_voice(), wave], sampling_rate=16000)
